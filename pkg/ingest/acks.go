package ingest

import (
	"bytes"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/workers"
)

// entry is one QoS 1 or 2 PUBLISH awaiting its answer.
type entry struct {
	packetID uint16
	qos      byte
	done     bool
	code     packets.Code
	deadline int64 // unix ns by which it is answered (ingest.ack-timeout)
}

// clientAcks is the ordered answer queue of one connection.
type clientAcks struct {
	cl *mqtt.Client
	// window holds one token per publish awaiting its ack; its capacity is
	// the Receive Maximum the server announced in CONNACK.
	window chan struct{}

	// recs counts MQTT 5 QoS 2 publishes answered with a success PUBREC
	// and not yet released by PUBREL: they still count against the
	// Receive Maximum (3.3.4) although their window slot is free.
	recs atomic.Int32

	mu       sync.Mutex
	queue    []*entry // guarded by mu; arrival order
	flushing bool     // guarded by mu; a flush goroutine is running
}

// unacknowledged is the number of the client's QoS 1/2 publishes the server
// has not yet answered with PUBACK, PUBCOMP or a failure PUBREC.
func (a *clientAcks) unacknowledged() int {
	return len(a.window) + int(a.recs.Load())
}

// releaseRec notes the PUBREL of a publish counted in recs.
func (a *clientAcks) releaseRec() {
	for {
		n := a.recs.Load()
		if n <= 0 || a.recs.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// pending reports whether packetID is still awaiting its answer.
func (a *clientAcks) pending(packetID uint16) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.queue {
		if e.packetID == packetID {
			return true
		}
	}
	return false
}

// acquire takes a window slot, waiting until deadline. It gives up early when
// the connection closes or stop is closed.
func (a *clientAcks) acquire(deadline time.Time, stop <-chan struct{}) bool {
	select {
	case a.window <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case a.window <- struct{}{}:
			return true
		case <-t.C:
			return false
		case <-stop:
			return false
		case <-tick.C:
			if a.cl.Closed() {
				return false
			}
		}
	}
}

// push appends a new entry, to be answered by deadline; the caller holds a
// window slot for it.
func (a *clientAcks) push(packetID uint16, qos byte, deadline time.Time) *entry {
	e := &entry{packetID: packetID, qos: qos, deadline: deadline.UnixNano()}
	a.mu.Lock()
	a.queue = append(a.queue, e)
	a.mu.Unlock()
	return e
}

// complete records e's answer, unless it has one already (the first
// answer stands: Kafka's, or the ack deadline's, expireOverdue), and starts
// a flush when the head of the queue is answerable. It never blocks on the
// network.
func (h *Hook) complete(a *clientAcks, e *entry, code packets.Code) {
	a.mu.Lock()
	if e.done {
		a.mu.Unlock()
		return
	}
	e.code, e.done = code, true
	h.startFlushLocked(a)
}

// startFlushLocked starts a flush when the head of a's queue is answerable
// and none runs, and unlocks a.mu.
func (h *Hook) startFlushLocked(a *clientAcks) {
	start := !a.flushing && len(a.queue) > 0 && a.queue[0].done
	if start {
		a.flushing = true
	}
	a.mu.Unlock()
	if !start {
		return
	}
	if _, ok := rawSocket(a.cl); ok || nonBlocking(a.cl) != nil {
		h.flushes.add(h, a)
		return
	}
	// On a worker whose stack has grown for a write already: a new
	// goroutine per flush paid that growth at every ack of a slow device.
	workers.Go(func() { h.flush(a) })
}

// flushQueue holds the connections whose socket takes acks without
// blocking (RawWriter) and that have acks to write. One goroutine at a
// time writes them all (drain): a Kafka answer that completes the
// publishes of many connections wakes one goroutine, not one per
// connection, which then waited for a processor behind one another
// (docs/benchmarks.md), and a connection's acks completed meanwhile
// leave in the same write.
type flushQueue struct {
	mu       sync.Mutex
	queued   []*clientAcks
	spare    []*clientAcks
	draining bool
	ready    []*entry // the draining goroutine's scratch
}

func (q *flushQueue) add(h *Hook, a *clientAcks) {
	q.mu.Lock()
	q.queued = append(q.queued, a)
	start := !q.draining
	q.draining = true
	q.mu.Unlock()
	if start {
		workers.Go(func() { q.drain(h) })
	}
}

// drain flushes the queued connections until none is left.
func (q *flushQueue) drain(h *Hook) {
	for {
		q.mu.Lock()
		batch := q.queued
		if len(batch) == 0 {
			q.draining = false
			q.mu.Unlock()
			return
		}
		q.queued, q.spare = q.spare[:0], nil
		q.mu.Unlock()
		for i, a := range batch {
			if !h.flushNow(a, &q.ready) {
				workers.Go(func() { h.flush(a) })
			}
			batch[i] = nil
		}
		q.mu.Lock()
		q.spare = batch[:0]
		q.mu.Unlock()
	}
}

// RawWriter is implemented by connections that may offer their socket: a
// connection whose bytes reach the socket as written (TCP, PROXY protocol
// over TCP; not TLS or WebSocket) gets its acks written by the flush queue
// without blocking.
type RawWriter interface {
	// RawWriter returns the socket, or false.
	RawWriter() (syscall.RawConn, bool)
}

// rawSocket returns cl's socket when its connection offers it.
func rawSocket(cl *mqtt.Client) (syscall.RawConn, bool) {
	if rw, ok := cl.Net.Conn.(RawWriter); ok {
		return rw.RawWriter()
	}
	return nil, false
}

// NonBlockingWriter is implemented by connections whose Write may not wait
// for the client (TLS over pkg/listen's socket): while NonBlocking reports
// true, a write of a caller holding the client's lock returns at once, so
// the flush queue writes their acks too.
type NonBlockingWriter interface {
	NonBlocking() bool
}

// nonBlocking returns cl's connection when it is a NonBlockingWriter with
// no raw socket, nil otherwise.
func nonBlocking(cl *mqtt.Client) NonBlockingWriter {
	if _, ok := rawSocket(cl); ok {
		return nil
	}
	nb, _ := cl.Net.Conn.(NonBlockingWriter)
	return nb
}

// flushNow is flush for a connection whose socket takes the acks at once,
// which is nearly always, on the flush queue's goroutine. It never blocks:
// it reports false, leaving the flush to a worker of its own, when the
// connection is no plain socket and no NonBlockingWriter (or one holding
// bytes back for its client), another write holds the client's lock or an
// MQTT 3.1.1 connection must be closed (writeAcks); a write the socket takes
// only in part hands the rest, and the flush, to a worker.
func (h *Hook) flushNow(a *clientAcks, scratch *[]*entry) bool {
	cl := a.cl
	rc, ok := rawSocket(cl)
	var nb NonBlockingWriter
	if !ok {
		if nb = nonBlocking(cl); nb == nil {
			return false
		}
	}
	if !cl.TryLock() {
		return false
	}
	v5 := cl.Properties.ProtocolVersion == 5
	buf := bufPool.Get().(*bytes.Buffer)
	ready := *scratch
	defer func() { clear(ready[:cap(ready)]); *scratch = ready[:0] }()
	for {
		if nb != nil && !nb.NonBlocking() {
			// Bytes wait for the client already: a write could wait.
			cl.Unlock()
			releaseBuf(buf)
			return false
		}
		var closes bool
		// An MQTT 3.1.1 connection that must be closed is the worker's
		// flush's: it writes the acks before and closes (writeAcks).
		ready, closes = a.takeAnswerable(ready[:0], !v5)
		if closes || len(ready) == 0 {
			cl.Unlock()
			releaseBuf(buf)
			return !closes
		}

		for range ready {
			<-a.window // before the acks leave, as in flush
		}
		now := time.Now().Unix()
		for _, e := range ready {
			h.encodeAck(a, e, buf, now, v5)
		}
		written := buf.Len()
		if nb != nil {
			// Taken whole (what the client does not read yet waits in
			// the connection); an error means the connection is gone,
			// and its reader ends it.
			if !cl.Closed() {
				_, _ = cl.Net.Conn.Write(buf.Bytes())
			}
		} else if !cl.Closed() {
			var werr error
			err := rc.Write(func(fd uintptr) bool {
				written, werr = writeFD(fd, buf.Bytes())
				return true // never wait for the socket here
			})
			switch {
			case err != nil || (werr != nil && werr != syscall.EAGAIN && werr != syscall.EINTR):
				written = buf.Len() // the connection is gone; its reader ends it
			case written < 0:
				written = 0
			}
		}
		if written < buf.Len() {
			// The socket's buffer is full: a worker writes the rest,
			// holding the client's lock until it did so that no other
			// packet lands inside an ack, and goes on flushing.
			buf.Next(written)
			count := int64(len(ready))
			workers.Go(func() {
				_, err := cl.Net.Conn.Write(buf.Bytes())
				cl.Unlock()
				if err != nil && !cl.Closed() {
					h.log.Debug("writing acks", "client_id", cl.ID, "err", err)
				}
				releaseBuf(buf)
				h.outstanding.Add(-count)
				h.flush(a)
			})
			return true
		}
		buf.Reset()
		h.outstanding.Add(-int64(len(ready)))
	}
}

func releaseBuf(buf *bytes.Buffer) {
	buf.Reset()
	bufPool.Put(buf)
}

// ackTimedOut answers a publish Kafka has not answered by its deadline.
var ackTimedOut = packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "kafka did not acknowledge the record within the ack deadline"}

// expireOverdue answers every publish of a whose deadline passed by now
// without an answer from Kafka with ackTimedOut (PUBACK/PUBREC 0x80 on MQTT
// 5, a closed connection on MQTT 3.1.1: writeAcks), and returns how many.
// Kafka's later answer for such a record changes nothing for the client.
func (h *Hook) expireOverdue(a *clientAcks, now int64) int {
	a.mu.Lock()
	n := 0
	for _, e := range a.queue {
		if e.deadline > now {
			// Entries come in arrival order and share one timeout: the
			// rest are due later.
			break
		}
		if !e.done {
			e.code, e.done = ackTimedOut, true
			n++
		}
	}
	h.startFlushLocked(a)
	return n
}

// takeAnswerable moves the answerable entries at the head of the queue to
// dst and returns it; with none, the flush is over (flushing is cleared).
// With v3Close it takes nothing and reports closes when one of them is a
// failure, which closes an MQTT 3.1.1 connection.
func (a *clientAcks) takeAnswerable(dst []*entry, v3Close bool) (out []*entry, closes bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for n < len(a.queue) && a.queue[n].done {
		if v3Close && a.queue[n].code.Code >= packets.ErrUnspecifiedError.Code {
			return dst, true
		}
		n++
	}
	if n == 0 {
		a.flushing = false
		if len(a.queue) == 0 {
			a.queue = nil // let a burst's backing array go
		}
		return dst, false
	}
	dst = append(dst, a.queue[:n]...)
	a.queue = a.queue[n:]
	return dst, false
}

// flush writes every answerable ack at the head of the queue, in order.
func (h *Hook) flush(a *clientAcks) {
	var ready []*entry
	for {
		ready, _ = a.takeAnswerable(ready[:0], false)
		if len(ready) == 0 {
			return
		}

		// Free the window slots before the acks leave: a client may
		// send its next publish the moment it reads an ack, and must
		// find the slot free then, or an MQTT 5 client keeping to the
		// Receive Maximum would be taken for one exceeding it.
		for range ready {
			<-a.window
		}
		h.writeAcks(a, ready)
		h.outstanding.Add(-int64(len(ready)))
	}
}

// writeAcks answers the given PUBLISHes in order with one socket write: at
// high rates one write(2) per ack would cost more than everything else the
// node does for a message.
func (h *Hook) writeAcks(a *clientAcks, entries []*entry) {
	cl := a.cl
	v5 := cl.Properties.ProtocolVersion == 5
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() { buf.Reset(); bufPool.Put(buf) }()
	now := time.Now().Unix()
	for _, e := range entries {
		failed := e.code.Code >= packets.ErrUnspecifiedError.Code
		if failed && !v5 {
			// MQTT 3.1.1 has no negative acknowledgement: closing the
			// connection is the only answer that does not claim
			// success. The acks before this one still go out; the
			// client resends the rest after it reconnects.
			h.write(cl, buf)
			if !cl.Closed() {
				h.log.Warn("closing mqtt 3.1.1 connection: publish refused or not written to kafka",
					"client_id", cl.ID, "packet_id", e.packetID, "reason", e.code.Reason)
			}
			cl.Stop(e.code)
			return
		}
		h.encodeAck(a, e, buf, now, v5)
	}
	h.write(cl, buf)
}

// encodeAck appends e's PUBACK or PUBREC to buf (a failure only on MQTT 5:
// writeAcks and flushNow close an MQTT 3.1.1 connection instead).
func (h *Hook) encodeAck(a *clientAcks, e *entry, buf *bytes.Buffer, now int64, v5 bool) {
	cl := a.cl
	failed := e.code.Code >= packets.ErrUnspecifiedError.Code
	typ := packets.Puback
	if e.qos == 2 {
		typ = packets.Pubrec
	}
	ack := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: typ},
		PacketID:        e.packetID,
		ReasonCode:      e.code.Code,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Created:         now,
		// mochi expires inflight entries older than this.
		Expiry: now + h.maxInflightAge,
	}
	// The client's limits, as mochi's own WritePacket applies them.
	ack.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	ack.Mods.DisallowProblemInfo = cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0 // [MQTT-3.1.2-29]
	if failed {
		ack.Properties.ReasonString = e.code.Reason
	} else if e.qos == 2 {
		// Record the PUBREC before writing it so mochi answers the
		// PUBREL that may follow at once with PUBCOMP
		// [MQTT-4.3.3-8], and a resent PUBLISH with this id is not
		// produced again [MQTT-4.3.3-10] (see OnPacketRead).
		// mochi's own receive quota is left alone: the hook counts
		// what awaits PUBREL itself (recs), and mochi would otherwise
		// refuse QoS 0 at a zero quota and send an MQTT 3.1.1
		// client a DISCONNECT.
		cl.State.Inflight.Set(ack)
		if v5 {
			a.recs.Add(1) // until PUBREL (OnPacketRead)
		}
	}
	var err error
	if typ == packets.Puback {
		err = ack.PubackEncode(buf)
	} else {
		err = ack.PubrecEncode(buf)
	}
	if err != nil {
		h.log.Error("encoding ack", "client_id", cl.ID, "packet_id", e.packetID, "err", err)
	}
}

// write sends buf on the client's connection under the client's lock, the
// one mochi's WritePacket takes, so packets never interleave.
func (h *Hook) write(cl *mqtt.Client, buf *bytes.Buffer) {
	if buf.Len() == 0 || cl.Closed() || cl.Net.Conn == nil {
		return
	}
	cl.Lock()
	_, err := cl.Net.Conn.Write(buf.Bytes())
	cl.Unlock()
	buf.Reset()
	if err != nil && !cl.Closed() {
		h.log.Debug("writing acks", "client_id", cl.ID, "err", err)
	}
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
