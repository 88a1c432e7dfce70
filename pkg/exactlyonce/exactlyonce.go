package exactlyonce

import (
	"context"
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/session"
)

// Epochs finds the session epoch of a connection, which fences its writes
// to the session store; false when the connection has no session.
type Epochs func(cl *mqtt.Client) (uint64, bool)

// Tracker records and answers inbound QoS 2 packet ids in the session
// store. It is safe for concurrent use.
type Tracker struct {
	store   *session.Store
	epochs  Epochs
	timeout time.Duration
	log     *slog.Logger
}

// New returns a Tracker over store; timeout bounds each store call. It does
// no I/O.
func New(store *session.Store, epochs Epochs, timeout time.Duration, log *slog.Logger) *Tracker {
	return &Tracker{store: store, epochs: epochs, timeout: timeout, log: log.With("component", "exactlyonce")}
}

// Received reports whether the inbound QoS 2 packet id of cl was answered
// with PUBREC before, on any node: ingest then answers a DUP resend without
// producing it again.
func (t *Tracker) Received(cl *mqtt.Client, packetID uint16) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	return t.store.IsReceived(ctx, cl.ID, packetID)
}

// MarkReceived records the inbound QoS 2 packet id of cl before its PUBREC;
// session.ErrFenced when cl no longer holds the session.
func (t *Tracker) MarkReceived(cl *mqtt.Client, packetID uint16) error {
	epoch, ok := t.epochs(cl)
	if !ok {
		return session.ErrFenced
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	_, err := t.store.MarkReceived(ctx, cl.ID, epoch, packetID)
	return err
}

// Release releases an inbound QoS 2 packet id in the store at PUBREL
// [MQTT-4.3.3-11] and reports whether it answered the PUBREL itself. mochi
// answers ids it tracks (received on this connection); an id received
// before a reconnect is only in the store, and is answered here with
// PUBCOMP.
func (t *Tracker) Release(cl *mqtt.Client, pk packets.Packet) (answered bool) {
	epoch, ok := t.epochs(cl)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	existed, err := t.store.Released(ctx, cl.ID, epoch, pk.PacketID)
	if err != nil {
		t.log.Warn("releasing inbound QoS 2 packet id", "client_id", cl.ID, "packet_id", pk.PacketID, "err", err)
	}
	if _, ok := cl.State.Inflight.Get(pk.PacketID); ok || !existed {
		return false
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
	return true
}
