package delivery

import (
	"sync"
	"time"
)

// ackSweep runs, once delivery.ack-delay is up, the pumps whose
// acknowledgements wait to be recorded (deferAcks, pushAck), all at once.
// A subscriber that gets a message every few seconds acknowledges each
// before the next arrives, so its acknowledgement is a round of its own:
// with a timer per pump, the node woke a goroutine for each, and each round
// reached Redis alone, where it cost a turn of the event loop and, with
// appendfsync always, an fsync. The sweep's rounds arrive together, share
// the node's pipelines (rounds) and Redis's turns. One timer runs while any
// pump is listed; an idle node has none.
type ackSweep struct {
	delay time.Duration
	// observe hears the pumps each sweep ran (the metrics).
	observe func(n int)

	mu    sync.Mutex
	due   []*Pump
	armed bool
}

// add lists p for the next sweep, at most delay from now.
func (s *ackSweep) add(p *Pump) {
	if p.listed.Swap(true) {
		return // listed already
	}
	s.mu.Lock()
	s.due = append(s.due, p)
	arm := !s.armed
	s.armed = true
	s.mu.Unlock()
	if arm {
		time.AfterFunc(s.delay, s.run)
	}
}

// run kicks every listed pump, which records its acknowledgements now.
func (s *ackSweep) run() {
	s.mu.Lock()
	due := s.due
	s.due, s.armed = nil, false
	s.mu.Unlock()
	for _, p := range due {
		p.listed.Store(false)
		p.due.Store(true)
		p.kick()
	}
	if s.observe != nil {
		s.observe(len(due))
	}
}
