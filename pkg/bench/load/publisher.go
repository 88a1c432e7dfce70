package load

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// publisher is one connection of the run (and its reconnections).
type publisher struct {
	r    *pubRun
	idx  int
	opts ClientOptions
	tmpl *publishTemplate
	hist *measure.Histogram // written by the current session's reader only
	cl   *Client            // the connection made during set-up, taken by run

	interval time.Duration // open loop: time between two sends
	next     int64         // open loop: next scheduled send, ns since t0
	left     atomic.Int64  // messages mode: publishes still to send

	mu      sync.Mutex // guards the in-flight table and acked
	sentAt  []int64    // by packet id: send time, ns since t0
	inUse   []bool     // by packet id
	nextPID int

	// With stamped payloads (pub/sub workloads):
	seq   uint64   // next sequence number; only the goroutine that sends uses it
	seqOf []uint64 // by packet id: the sequence number sent with it
	acked seqSet   // sequence numbers acked (QoS 0: sent)
	slots chan struct{}
}

func newPublisher(r *pubRun, idx int) (*publisher, error) {
	cfg := r.cfg
	id := fmt.Sprintf("%s-%05d", cfg.ClientPrefix, idx)
	user, pass := r.creds(idx)
	topic := fmt.Sprintf("%s/%d", strings.TrimSuffix(cfg.TopicPrefix, "/"), idx)
	if cfg.Topic != "" {
		if user == "" && strings.Contains(cfg.Topic, "%u") {
			return nil, fmt.Errorf("topic %q: publisher %d has no username for %%u", cfg.Topic, idx)
		}
		topic = strings.NewReplacer("%u", user, "%i", strconv.Itoa(idx)).Replace(cfg.Topic)
	}
	if r.ext != nil && r.ext.topic != nil {
		topic = r.ext.topic(idx)
	}
	tmpl, err := newPublishTemplate(byte(cfg.Version), byte(cfg.QoS), topic, r.payload)
	if err != nil {
		return nil, err
	}
	p := &publisher{
		r:   r,
		idx: idx,
		opts: ClientOptions{
			ClientID:  id,
			Version:   byte(cfg.Version),
			Keepalive: cfg.Keepalive,
			Username:  user,
			Password:  pass,
			TLS:       cfg.TLS,
			WebSocket: cfg.WebSocket,
		},
		tmpl: tmpl,
		hist: measure.NewHistogram(),
	}
	p.left.Store(int64(cfg.Messages))
	// Packet ids cycle through 1..space; twice the window leaves room for
	// acks that come back out of order.
	space := min(65535, max(4*cfg.Window, 64))
	p.sentAt = make([]int64, space+1)
	p.inUse = make([]bool, space+1)
	if r.ext != nil && r.ext.stamp {
		p.seqOf = make([]uint64, space+1)
	}
	if r.ext != nil && r.ext.slots != nil && !cfg.OpenLoop() {
		p.slots = r.ext.slots[idx]
	}
	if cfg.OpenLoop() {
		p.interval = time.Duration(float64(time.Second) * float64(cfg.Publishers) / cfg.Rate)
		// Spread the publishers over one interval.
		p.next = int64(p.interval) * int64(idx) / int64(cfg.Publishers)
	}
	return p, nil
}

func (p *publisher) now() int64 { return int64(time.Since(p.r.t0)) }

// done reports whether this publisher has nothing more to send.
func (p *publisher) done(sendCtx context.Context) bool {
	return sendCtx.Err() != nil || (p.r.cfg.Messages > 0 && p.left.Load() == 0) || p.now() >= p.r.mEnd
}

// run sends until sendCtx ends (or the message count is reached), waits for
// the outstanding acks, and disconnects. A lost connection is counted and
// replaced.
func (p *publisher) run(ctx, sendCtx context.Context) {
	backoff := 50 * time.Millisecond
	for !p.done(sendCtx) {
		cl := p.cl
		p.cl = nil
		if cl == nil {
			var err error
			cl, err = Dial(sendCtx, p.r.cfg.Addr, p.opts)
			if err != nil {
				if sendCtx.Err() == nil {
					p.r.connectErrors.Add(1)
				}
				sleepUntil(sendCtx, time.Now().Add(backoff))
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
		}
		backoff = 50 * time.Millisecond
		p.session(ctx, sendCtx, cl)
	}
	if p.cl != nil {
		_ = p.cl.Disconnect()
	}
}

// session drives one connection until it is lost or the run ends.
func (p *publisher) session(ctx, sendCtx context.Context, cl *Client) {
	cfg := p.r.cfg
	window := cfg.Window
	if cfg.Version == 5 {
		window = min(window, int(cl.ServerReceiveMaximum))
	}
	s := &session{
		p:       p,
		cl:      cl,
		tokens:  make(chan struct{}, window),
		dead:    make(chan struct{}),
		drained: make(chan struct{}, 1),
	}

	var lost bool
	switch {
	case p.slots != nil:
		go s.read()
		lost = s.sendEndToEnd(sendCtx)
	case cfg.QoS == 0 && !cfg.OpenLoop():
		go s.read()
		lost = s.sendQoS0(sendCtx)
	case cfg.OpenLoop():
		go s.read()
		lost = s.sendOpenLoop(sendCtx)
	default:
		// Fill the window before the reader starts: from then on the
		// reader sends a new publish for each ack (refill).
		s.sendWithAcks = sendCtx
		_, err := s.refill()
		if err == nil {
			err = cl.Flush()
		}
		go s.read()
		lost = err != nil || s.waitClosedLoop(sendCtx)
	}
	if !lost {
		lost = s.drain(ctx)
	}
	s.closing.Store(true)
	if lost {
		_ = cl.Close()
	} else {
		_ = cl.Disconnect()
	}
	<-s.dead
	// Whatever is still in flight will never be answered.
	p.mu.Lock()
	for i := range p.inUse {
		if p.inUse[i] {
			p.inUse[i] = false
			p.r.unacked.Add(1)
		}
	}
	p.mu.Unlock()
}

// session is one connection of a publisher.
type session struct {
	p       *publisher
	cl      *Client
	tokens  chan struct{} // one per publish in flight; capacity is the window
	dead    chan struct{} // closed when the reader stops
	drained chan struct{} // signalled when the last in-flight publish is answered
	closing atomic.Bool   // the publisher closes the connection itself
	// sendWithAcks is set in closed loop (QoS 1/2): the reader sends the
	// next publishes itself, after handling every ack it has read, until
	// this context ends. Sending from the reader costs no goroutine
	// switch per ack and batches the new publishes of a burst of acks
	// into one write, so the load generator stays cheap next to the
	// broker it measures.
	sendWithAcks context.Context
}

// batch is how many publishes are written before a flush when more are
// ready: fewer syscalls without delaying the first.
const batch = 64

// send writes one publish sent (or scheduled) at the given time.
func (s *session) send(at int64) error {
	p := s.p
	var pid uint16
	stamped := p.seqOf != nil
	seq := p.seq
	p.seq++
	if p.r.cfg.QoS > 0 {
		p.mu.Lock()
		for {
			p.nextPID++
			if p.nextPID >= len(p.inUse) {
				p.nextPID = 1
			}
			if !p.inUse[p.nextPID] {
				break
			}
		}
		pid = uint16(p.nextPID)
		p.inUse[pid] = true
		p.sentAt[pid] = at
		if stamped {
			p.seqOf[pid] = seq
		}
		p.mu.Unlock()
	} else if stamped {
		p.mu.Lock()
		p.acked.add(seq)
		p.mu.Unlock()
	}
	if at >= p.r.mStart && at < p.r.mEnd {
		p.r.sent.Add(1)
	}
	if p.r.cfg.Messages > 0 {
		p.left.Add(-1)
		if p.r.cfg.QoS == 0 {
			p.r.touch(at)
		}
	}
	if stamped {
		return s.cl.writeStampedPublish(p.tmpl, pid, stamp{pub: uint32(p.idx), seq: seq, at: at})
	}
	return s.cl.writePublish(p.tmpl, pid)
}

// acquire takes a window slot; false when the run ended or the connection
// was lost (lost tells which).
func (s *session) acquire(sendCtx context.Context) (ok, lost bool) {
	select {
	case s.tokens <- struct{}{}:
		return true, false
	default:
	}
	select {
	case s.tokens <- struct{}{}:
		return true, false
	case <-sendCtx.Done():
		return false, false
	case <-s.dead:
		return false, true
	}
}

// tryAcquire takes a window slot if one is free.
func (s *session) tryAcquire() bool {
	select {
	case s.tokens <- struct{}{}:
		return true
	default:
		return false
	}
}

// refill sends publishes while the window has room (closed loop). The
// caller flushes.
func (s *session) refill() (wrote bool, err error) {
	p := s.p
	for !p.done(s.sendWithAcks) && s.tryAcquire() {
		at := p.now()
		if at >= p.r.mEnd {
			<-s.tokens
			break
		}
		if err := s.send(at); err != nil {
			return wrote, err
		}
		wrote = true
	}
	return wrote, nil
}

// waitClosedLoop waits while the reader keeps the window full, until the
// run ends, the last message of messages mode is answered, or the
// connection is lost.
func (s *session) waitClosedLoop(sendCtx context.Context) (lost bool) {
	p := s.p
	for {
		select {
		case <-sendCtx.Done():
			return false
		case <-s.dead:
			return true
		case <-s.drained:
			if p.r.cfg.Messages > 0 && p.left.Load() == 0 {
				return false
			}
		}
	}
}

func (s *session) sendQoS0(sendCtx context.Context) (lost bool) {
	p := s.p
	for !p.done(sendCtx) {
		for n := 0; n < batch && !p.done(sendCtx); n++ {
			at := p.now()
			if at >= p.r.mEnd {
				break
			}
			if s.send(at) != nil {
				return true
			}
		}
		if s.cl.Flush() != nil {
			return true
		}
		select {
		case <-s.dead:
			return true
		default:
		}
	}
	return false
}

func (s *session) sendOpenLoop(sendCtx context.Context) (lost bool) {
	p := s.p
	end := p.r.mEnd
	for !p.done(sendCtx) {
		if wait := time.Duration(p.next - p.now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-sendCtx.Done():
				t.Stop()
				return false
			case <-s.dead:
				t.Stop()
				return true
			}
		}
		// Send everything that is due, waiting for window slots: a late
		// send is measured from its scheduled time.
		for n := 0; n < batch && p.next <= p.now() && p.next < end && !p.done(sendCtx); n++ {
			if p.r.cfg.QoS > 0 && !s.tryAcquire() {
				// The window is full: what is buffered must go out
				// before waiting, or its acks can never free a slot.
				if s.cl.Flush() != nil {
					return true
				}
				ok, lost := s.acquire(sendCtx)
				if !ok {
					return lost
				}
			}
			if s.send(p.next) != nil {
				return true
			}
			p.next += int64(p.interval)
		}
		if s.cl.Flush() != nil {
			return true
		}
	}
	return false
}

// sendEndToEnd is the closed loop of the pub/sub workloads: a publish
// needs a slot of the end-to-end window, which the subscriber frees when the
// message arrives, and (QoS 1/2) a free packet id.
func (s *session) sendEndToEnd(sendCtx context.Context) (lost bool) {
	p := s.p
	pending := 0
	for !p.done(sendCtx) {
		select {
		case p.slots <- struct{}{}:
		default:
			// Out of slots: what is buffered must go out before
			// waiting, or it can never be delivered.
			if s.cl.Flush() != nil {
				return true
			}
			pending = 0
			select {
			case p.slots <- struct{}{}:
			case <-sendCtx.Done():
				return false
			case <-s.dead:
				return true
			}
		}
		if p.r.cfg.QoS > 0 && !s.tryAcquire() {
			if s.cl.Flush() != nil {
				return true
			}
			pending = 0
			if ok, lost := s.acquire(sendCtx); !ok {
				p.giveBackSlot()
				return lost
			}
		}
		at := p.now()
		if at >= p.r.mEnd {
			p.giveBackSlot()
			if p.r.cfg.QoS > 0 {
				<-s.tokens
			}
			break
		}
		if s.send(at) != nil {
			return true
		}
		if pending++; pending >= batch {
			if s.cl.Flush() != nil {
				return true
			}
			pending = 0
		}
	}
	return s.cl.Flush() != nil
}

// giveBackSlot returns an end-to-end slot taken for a message that was not
// sent. (Slots held by messages sent are given back by the subscriber, so
// one taken here is always there; the select only keeps a miscount from
// blocking.)
func (p *publisher) giveBackSlot() {
	select {
	case <-p.slots:
	default:
	}
}

// drain waits until every publish in flight is answered, the drain time is
// up, or the connection is lost.
func (s *session) drain(ctx context.Context) (lost bool) {
	if s.p.r.cfg.QoS == 0 {
		return false
	}
	if len(s.tokens) == 0 {
		return false
	}
	t := time.NewTimer(s.p.r.cfg.Drain)
	defer t.Stop()
	for len(s.tokens) > 0 {
		select {
		case <-s.drained:
		case <-s.dead:
			return true
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return false
}

// read handles everything the broker sends until the connection ends.
func (s *session) read() {
	defer close(s.dead)
	p := s.p
	cl := s.cl
	flush := false
	for {
		pk, err := cl.ReadPacket()
		if err != nil {
			if !s.closing.Load() {
				p.r.disconnects.Add(1)
			}
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Puback:
			if p.r.cfg.QoS == 1 {
				s.complete(pk.PacketID, pk.ReasonCode)
			}
		case packets.Pubrec:
			if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
				s.complete(pk.PacketID, pk.ReasonCode) // ends the QoS 2 flow [MQTT-4.3.3-4]
				break
			}
			err = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID})
			flush = true
		case packets.Pubcomp:
			if p.r.cfg.QoS == 2 {
				s.complete(pk.PacketID, pk.ReasonCode)
			}
		case packets.Disconnect:
			if !s.closing.Load() {
				p.r.disconnects.Add(1)
			}
			return
		}
		if err == nil && !cl.Buffered() {
			// Everything read is handled: answer and refill in one write.
			if s.sendWithAcks != nil {
				var wrote bool
				wrote, err = s.refill()
				flush = flush || wrote
			}
			if err == nil && flush {
				err, flush = cl.Flush(), false
			}
		}
		if err != nil {
			if !s.closing.Load() {
				p.r.disconnects.Add(1)
			}
			return
		}
	}
}

// complete records the final answer to the publish with packet id pid.
func (s *session) complete(pid uint16, reason byte) {
	p := s.p
	now := p.now()
	p.mu.Lock()
	if int(pid) >= len(p.inUse) || !p.inUse[pid] {
		p.mu.Unlock()
		p.r.unknownAcks.Add(1)
		return
	}
	p.inUse[pid] = false
	at := p.sentAt[pid]
	if p.seqOf != nil && reason < packets.ErrUnspecifiedError.Code {
		p.acked.add(p.seqOf[pid])
	}
	p.mu.Unlock()

	if reason >= packets.ErrUnspecifiedError.Code {
		p.r.nacks.Add(1)
	} else {
		p.r.totalAcked.Add(1)
		if now >= p.r.mStart && now < p.r.mEnd {
			p.r.acked.Add(1)
		}
		if at >= p.r.mStart && at < p.r.mEnd {
			p.hist.Record(time.Duration(now - at))
		}
	}
	p.r.touch(now)
	<-s.tokens
	if len(s.tokens) == 0 {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
}
