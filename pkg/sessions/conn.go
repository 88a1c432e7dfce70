package sessions

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/delivery"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// conn is one connection's part of a session.
type conn struct {
	h     *Hook
	cl    *mqtt.Client
	epoch uint64
	// lastSeq is the session's handover counter when this connection
	// registered: what is in flight up to it is resent with DUP.
	lastSeq uint64
	// present is the CONNACK Session Present flag.
	present bool
	// inflight and queued are what the store's Connect found in the
	// resumed session, for the pump's start; noticed says a notice named
	// the client before the connection was registered, so that the pump
	// reads the session afresh instead.
	inflight []session.InflightMessage
	queued   bool
	noticed  bool
	// failed is set when the store could not register the session, or
	// could not confirm the registration (registered).
	failed error
	// registered says the store registered the session for this
	// connection even if it failed: its end is recorded as for any other.
	registered bool
	will       *session.Will
	// willDue: the connection ended abnormally (OnWill ran).
	willDue   atomic.Bool
	takenOver atomic.Bool
	// mayGetWork says messages can be queued or handed to the session:
	// it held subscriptions, queued or inflight messages when this
	// connection resumed it, or the client sent a SUBSCRIBE since (set
	// before the subscriptions are stored). Only such sessions are
	// polled: a dispatcher queues nothing for a session without a
	// subscription (session.OutcomeNotSubscribed), so a device that only
	// publishes costs the poll nothing.
	mayGetWork atomic.Bool
	// disconnectCode is the reason code of the client's DISCONNECT.
	disconnectCode atomic.Uint32
	// pump writes the session's messages to the connection.
	pump *delivery.Pump
}

// Client implements subscribe.Conn.
func (c *conn) Client() *mqtt.Client { return c.cl }

// Epoch implements subscribe.Conn.
func (c *conn) Epoch() uint64 { return c.epoch }

// Queued implements subscribe.Conn: the pump looks at the queue.
func (c *conn) Queued() { c.pump.KickQueued() }

// Gone implements subscribe.Conn: a newer connection holds the session.
func (c *conn) Gone() { c.h.closeTakenOver(c) }

// halt marks c taken over by a newer connection of this node: its pump
// stops and its end touches the session no more.
func (c *conn) halt() {
	c.takenOver.Store(true)
	c.pump.Halt()
}

// takeOver ends the local connection c whose client id a new CONNECT on
// this node took: its pump stops, its end touches the session no more, and
// it is closed with DISCONNECT 0x8E on MQTT 5 [MQTT-3.1.4-3], without a
// packet on 3.1.1 [MQTT-3.1.4-2]. Its will stays armed: a connection taken
// over ends without DISCONNECT, and the session store decides about the
// will (TakenOverWill).
func (h *Hook) takeOver(c *conn) {
	c.halt()
	if c.cl.Properties.ProtocolVersion >= 5 {
		_ = h.o.Server.DisconnectClient(c.cl, packets.ErrSessionTakenOver)
		return
	}
	c.cl.Stop(packets.ErrSessionTakenOver)
}

// closeTakenOver closes a connection whose session a newer connection took
// over: DISCONNECT 0x8E on MQTT 5 [MQTT-3.1.4-3], a closed socket on 3.1.1.
// Its will is the session's business now, not this connection's.
func (h *Hook) closeTakenOver(c *conn) {
	if !c.takenOver.CompareAndSwap(false, true) {
		return
	}
	c.pump.Halt()
	atomic.StoreUint32(&c.cl.Properties.Will.Flag, 0)
	h.log.Info("session taken over on another node; closing connection", "client_id", c.cl.ID)
	if c.cl.Properties.ProtocolVersion >= 5 {
		_ = h.o.Server.DisconnectClient(c.cl, packets.ErrSessionTakenOver)
		return
	}
	c.cl.Stop(packets.ErrSessionTakenOver)
}

// Swept closes every connection of the node, after a sweeper took the node
// for dead (its heartbeats did not reach Redis for node.liveness-ttl: it
// was cut off from Redis, or paused) and ended what their sessions held:
// their wills claimed and published when due, their sessions marked
// disconnected, so that no notice reaches this node for them and their
// expiry runs. Left open, such a connection would get its messages only at
// the poll, until its session expired under it. Closed with DISCONNECT
// 0x9C (Use another server) on MQTT 5, the socket on 3.1.1, its client
// reconnects (through the load balancer) and resumes its session. A
// connection that registered after the sweep is closed too, and reconnects
// the same way. Wills stay armed: the connection ends without DISCONNECT,
// and a will the sweeper published was claimed, so it is not sent twice.
func (h *Hook) Swept() {
	cs := h.conns()
	h.log.Warn("closing the connections of the swept node; their clients reconnect and resume their sessions", "connections", len(cs))
	// A few at a time: a client that does not read its DISCONNECT holds
	// up only its own close.
	var wg sync.WaitGroup
	sem := make(chan struct{}, sweptClosers)
	for _, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if c.cl.Properties.ProtocolVersion >= 5 {
				_ = h.o.Server.DisconnectClient(c.cl, packets.ErrUseAnotherServer)
				return
			}
			c.cl.Stop(packets.ErrUseAnotherServer)
		}()
	}
	wg.Wait()
}

// sweptClosers bounds the connections Swept closes at once.
const sweptClosers = 64
