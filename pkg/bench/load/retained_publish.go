package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// retainedMagic marks a payload of the retained workload ("fgrt").
const retainedMagic = 0x66677274

// probeWait is how long one probe SUBSCRIBE waits for the retained
// messages it asked for before the next is sent.
const probeWait = 500 * time.Millisecond

// newRetainedRunID returns the id written into every payload of a run, so
// that a message left on a topic by an earlier run is told apart.
func newRetainedRunID() uint32 {
	return uint32(time.Now().UnixNano()/int64(time.Microsecond)) ^ uint32(runCounter.Add(1))<<24
}

// retainedPayload returns message i's payload: magic, run, index, then
// filler up to size.
func retainedPayload(run uint32, i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b[0:], retainedMagic)
	binary.BigEndian.PutUint32(b[4:], run)
	binary.BigEndian.PutUint32(b[8:], uint32(i))
	for j := retainedStampSize; j < size; j++ {
		b[j] = 'r'
	}
	return b
}

// readRetainedStamp reads the run and index at the start of payload; ok is
// false for a payload of anything else.
func readRetainedStamp(payload []byte) (run uint32, i int, ok bool) {
	if len(payload) < retainedStampSize || binary.BigEndian.Uint32(payload) != retainedMagic {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(payload[4:]), int(binary.BigEndian.Uint32(payload[8:])), true
}

// retainedPublisher is one connection of phase 1.
type retainedPublisher struct {
	cl     *Client
	tokens chan struct{} // a send puts one in; its PUBACK takes it out
	dead   chan struct{} // closed when the reader stops
	err    error         // why the reader stopped; read after dead

	mu    sync.Mutex // guards inUse and next
	inUse []bool     // by packet id
	next  int

	acked, refused atomic.Int64
}

// takePID returns a free packet id. There is always one: ids outnumber the
// window.
func (p *retainedPublisher) takePID() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.next = p.next%(len(p.inUse)-1) + 1
		if !p.inUse[p.next] {
			p.inUse[p.next] = true
			return uint16(p.next)
		}
	}
}

// read counts the PUBACKs until the connection ends.
func (p *retainedPublisher) read() {
	defer close(p.dead)
	for {
		pk, err := p.cl.ReadPacket()
		if err != nil {
			p.err = err
			return
		}
		if pk.FixedHeader.Type != packets.Puback {
			continue
		}
		p.mu.Lock()
		known := int(pk.PacketID) < len(p.inUse) && p.inUse[pk.PacketID]
		if known {
			p.inUse[pk.PacketID] = false
		}
		p.mu.Unlock()
		if !known {
			continue
		}
		if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
			p.refused.Add(1)
		} else {
			p.acked.Add(1)
		}
		<-p.tokens
	}
}

// send publishes the indices [lo, hi) in order, Window at a time, and
// waits for their PUBACKs.
func (p *retainedPublisher) send(ctx context.Context, cfg *RetainedConfig, run uint32, lo, hi int) error {
	const batch = 32
	unflushed := 0
	for i := lo; i < hi; i++ {
		select {
		case p.tokens <- struct{}{}:
		default:
			if err := p.cl.Flush(); err != nil {
				return err
			}
			unflushed = 0
			select {
			case p.tokens <- struct{}{}:
			case <-p.dead:
				return p.err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err := p.cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
			TopicName:   cfg.topic(i),
			Payload:     retainedPayload(run, i, cfg.PayloadSize),
			PacketID:    p.takePID(),
		})
		if err != nil {
			return err
		}
		if unflushed++; unflushed == batch {
			if err := p.cl.Flush(); err != nil {
				return err
			}
			unflushed = 0
		}
	}
	if err := p.cl.Flush(); err != nil {
		return err
	}
	// Every send holds a token until its PUBACK: all are answered once
	// the window is empty again.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(p.tokens) > 0 {
		select {
		case <-tick.C:
		case <-p.dead:
			if len(p.tokens) > 0 {
				return p.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publishRetained is phase 1: every message published and acknowledged.
func publishRetained(ctx context.Context, cfg *RetainedConfig, res *RetainedResult, progress func(string)) error {
	pubs := make([]*retainedPublisher, cfg.Publishers)
	defer func() {
		for _, p := range pubs {
			if p != nil {
				_ = p.cl.Disconnect()
				<-p.dead
			}
		}
	}()
	for i := range pubs {
		cl, err := Dial(ctx, cfg.Addr, ClientOptions{
			ClientID:  fmt.Sprintf("%s-%08x-pub-%03d", cfg.ClientPrefix, res.RunID, i),
			Version:   byte(cfg.Version),
			Keepalive: cfg.Keepalive,
			Username:  cfg.Username,
			Password:  cfg.Password,
		})
		if err != nil {
			return fmt.Errorf("retained publisher: %w", err)
		}
		window := cfg.Window
		if cfg.Version == 5 {
			window = min(window, int(cl.ServerReceiveMaximum))
		}
		p := &retainedPublisher{
			cl:     cl,
			tokens: make(chan struct{}, window),
			dead:   make(chan struct{}),
			inUse:  make([]bool, min(65535, 4*window)+1),
		}
		pubs[i] = p
		go p.read()
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.PublishTimeout)
	defer cancel()
	stopProgress := everyFewSeconds(ctx, func() {
		var n int64
		for _, p := range pubs {
			n += p.acked.Load() + p.refused.Load()
		}
		progress(fmt.Sprintf("published %d of %d", n, cfg.Messages))
	})
	start := time.Now()
	errs := make([]error, len(pubs))
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := cfg.publisherRange(i)
			if err := p.send(ctx, cfg, res.RunID, lo, hi); err != nil {
				errs[i] = fmt.Errorf("retained publisher %d after %d acks: %w", i, p.acked.Load(), err)
				cancel()
			}
		}()
	}
	wg.Wait()
	stopProgress()
	res.PublishTime = time.Since(start)
	for _, p := range pubs {
		res.Published += p.acked.Load()
		res.PublishRefused += p.refused.Load()
	}
	// The first publisher that failed cancelled the others: its error is
	// the one to tell.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		if errors.Is(first, context.DeadlineExceeded) {
			return fmt.Errorf("publishing %d retained messages took longer than -publish-timeout %v (%d acked): %w", cfg.Messages, cfg.PublishTimeout, res.Published, first)
		}
		return first
	}
	res.PublishPerSec = float64(res.Published+res.PublishRefused) / res.PublishTime.Seconds()
	return nil
}

// waitRetainedStored subscribes to the last topic of every publisher,
// again and again, until each has returned this run's message.
func waitRetainedStored(ctx context.Context, cfg *RetainedConfig, res *RetainedResult) error {
	start := time.Now()
	deadline := start.Add(cfg.StoreTimeout)
	pending := map[string]bool{}
	for p := range cfg.Publishers {
		if lo, hi := cfg.publisherRange(p); hi > lo {
			pending[cfg.topic(hi-1)] = true
		}
	}
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%d of the %d publishers' last retained messages not returned to a SUBSCRIBE %v after the last PUBACK (%d probes)",
				len(pending), cfg.Publishers, cfg.StoreTimeout, attempt-1)
		}
		res.ProbeAttempts = attempt
		if err := probeRetained(ctx, cfg, res.RunID, attempt, pending, deadline); err != nil {
			return err
		}
		if len(pending) == 0 {
			res.StoredAfter = time.Since(start)
			return nil
		}
	}
}

// probeRetained is one probe: a fresh connection subscribes (QoS 0) to the
// pending topics and deletes those whose message of this run arrives
// within probeWait. A connection is not reused: a read deadline may cut a
// packet in two.
func probeRetained(ctx context.Context, cfg *RetainedConfig, run uint32, attempt int, pending map[string]bool, deadline time.Time) error {
	cl, err := Dial(ctx, cfg.Addr, ClientOptions{
		ClientID:  fmt.Sprintf("%s-%08x-probe-%d", cfg.ClientPrefix, run, attempt),
		Version:   byte(cfg.Version),
		Keepalive: cfg.Keepalive,
		Username:  cfg.Username,
		Password:  cfg.Password,
	})
	if err != nil {
		return fmt.Errorf("retained probe: %w", err)
	}
	defer func() { _ = cl.Disconnect() }()
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1}
	for t := range pending {
		sub.Filters = append(sub.Filters, packets.Subscription{Filter: t})
	}
	if err := cl.WritePacket(sub); err != nil {
		return err
	}
	if err := cl.Flush(); err != nil {
		return fmt.Errorf("retained probe: %w", err)
	}
	end := time.Now().Add(probeWait)
	if end.After(deadline) {
		end = deadline
	}
	_ = cl.SetReadDeadline(end)
	for len(pending) > 0 {
		pk, err := cl.ReadPacket()
		if err != nil {
			return nil // the wait is over (or the connection): next probe
		}
		switch pk.FixedHeader.Type {
		case packets.Suback:
			for _, code := range pk.ReasonCodes {
				if code >= packets.ErrUnspecifiedError.Code {
					return fmt.Errorf("%w: retained probe: reason codes %x", ErrSubscribeRefused, pk.ReasonCodes)
				}
			}
		case packets.Publish:
			if r, i, ok := readRetainedStamp(pk.Payload); ok && r == run && pk.TopicName == cfg.topic(i) {
				delete(pending, pk.TopicName)
			}
		}
	}
	return nil
}

// everyFewSeconds calls f every 5 s until the returned stop is called or
// ctx ends.
func everyFewSeconds(ctx context.Context, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f()
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
