package ingest

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// entry is one QoS 1 or 2 PUBLISH awaiting its answer.
type entry struct {
	packetID uint16
	qos      byte
	done     bool
	code     packets.Code
}

// clientAcks is the ordered answer queue of one connection.
type clientAcks struct {
	cl *mqtt.Client
	// window holds one token per publish awaiting its ack; its capacity is
	// the Receive Maximum the server announced in CONNACK.
	window chan struct{}

	mu       sync.Mutex
	queue    []*entry // guarded by mu; arrival order
	flushing bool     // guarded by mu; a flush goroutine is running
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

// push appends a new entry; the caller holds a window slot for it.
func (a *clientAcks) push(packetID uint16, qos byte) *entry {
	e := &entry{packetID: packetID, qos: qos}
	a.mu.Lock()
	a.queue = append(a.queue, e)
	a.mu.Unlock()
	return e
}

// complete records e's answer and starts a flush when the head of the queue
// is answerable. It never blocks on the network.
func (h *Hook) complete(a *clientAcks, e *entry, code packets.Code) {
	a.mu.Lock()
	e.code, e.done = code, true
	start := !a.flushing && len(a.queue) > 0 && a.queue[0].done
	if start {
		a.flushing = true
	}
	a.mu.Unlock()
	if start {
		go h.flush(a)
	}
}

// flush writes every answerable ack at the head of the queue, in order.
func (h *Hook) flush(a *clientAcks) {
	var ready []*entry
	for {
		a.mu.Lock()
		n := 0
		for n < len(a.queue) && a.queue[n].done {
			n++
		}
		if n == 0 {
			a.flushing = false
			if len(a.queue) == 0 {
				a.queue = nil // let a burst's backing array go
			}
			a.mu.Unlock()
			return
		}
		ready = append(ready[:0], a.queue[:n]...)
		a.queue = a.queue[n:]
		a.mu.Unlock()

		for _, e := range ready {
			h.writeAck(a.cl, e)
			<-a.window
			h.outstanding.Add(-1)
		}
	}
}

// writeAck answers one PUBLISH.
func (h *Hook) writeAck(cl *mqtt.Client, e *entry) {
	failed := e.code.Code >= packets.ErrUnspecifiedError.Code
	if failed && cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has no negative acknowledgement: closing the
		// connection is the only answer that does not claim success. The
		// client resends the PUBLISH after it reconnects.
		if !cl.Closed() {
			h.log.Warn("closing mqtt 3.1.1 connection: publish could not be written to kafka",
				"client", cl.ID, "packet_id", e.packetID, "reason", e.code.Reason)
		}
		cl.Stop(e.code)
		return
	}
	typ := packets.Puback
	if e.qos == 2 {
		typ = packets.Pubrec
	}
	now := time.Now().Unix()
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    e.packetID,
		ReasonCode:  e.code.Code,
		Created:     now,
		// mochi expires inflight entries older than this.
		Expiry: now + h.maxInflightAge,
	}
	if failed {
		ack.Properties.ReasonString = e.code.Reason
	} else if e.qos == 2 {
		// Record the PUBREC before writing it so mochi answers the PUBREL
		// that may follow at once with PUBCOMP [MQTT-4.3.3-8], and a
		// resent PUBLISH with this id is not produced again
		// [MQTT-4.3.3-10] (see OnPacketRead).
		cl.State.Inflight.Set(ack)
		cl.State.Inflight.DecreaseReceiveQuota() // mochi gives it back on PUBREL
	}
	if err := cl.WritePacket(ack); err != nil && !cl.Closed() {
		h.log.Debug("writing ack", "client", cl.ID, "packet_id", e.packetID, "err", err)
	}
}
