package frontend

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// connHook ties mochi clients to their wrapped connections and notes the
// packets after which a client is owed nothing more.
type connHook struct {
	mqtt.HookBase
	s *Server
}

func (h *connHook) ID() string { return "fleetgate-conn" }

func (h *connHook) Provides(b byte) bool {
	switch b { // mochi asks for every event of every connection
	case mqtt.OnConnect, mqtt.OnPacketSent, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnConnect records the client on its connection and admits it (Server.admit:
// mqtt.max-clients, mqtt.max-keepalive). It runs before authentication and
// any session work. Returning nil accepts.
func (h *connHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	c, ok := cl.Net.Conn.(*conn)
	if !ok {
		return nil
	}
	c.connectAt = monotonic()
	detachConnect(cl)
	c.setClient(cl)
	return h.s.admit(cl, c)
}

// detachConnect copies what the client keeps of its CONNECT: mochi decodes
// strings and byte fields over the packet's bytes, so its client id alone
// would keep the whole packet, password and all, for the connection's life
// (~0.2 KiB with a token, more with user properties). The authentication
// hook replaces Username with the identity; the sessions hook copies the
// will it keeps.
func detachConnect(cl *mqtt.Client) {
	cl.ID = strings.Clone(cl.ID)
	p := &cl.Properties.Props
	p.AuthenticationMethod = strings.Clone(p.AuthenticationMethod)
	// Nothing reads the CONNECT's user properties after it is handled.
	p.User = nil
	w := &cl.Properties.Will
	w.TopicName = strings.Clone(w.TopicName)
	w.Payload = bytes.Clone(w.Payload)
	w.User = cloneUser(w.User)
}

// cloneUser returns a copy of user properties that shares no bytes with
// them.
func cloneUser(u []packets.UserProperty) []packets.UserProperty {
	if len(u) == 0 {
		return nil
	}
	c := make([]packets.UserProperty, len(u))
	for i, p := range u {
		c[i] = packets.UserProperty{Key: strings.Clone(p.Key), Val: strings.Clone(p.Val)}
	}
	return c
}

// OnSessionEstablish notes that the connection's end owes the disconnect
// hooks (see establishMochi).
func (h *connHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if c, ok := cl.Net.Conn.(*conn); ok {
		c.established = true
	}
}

// OnDisconnect notes that the disconnect hooks ran.
func (h *connHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if c, ok := cl.Net.Conn.(*conn); ok {
		c.disconnected = true
	}
}

// OnSessionEstablished logs and counts a successful connect, and times it
// from OnConnect: mochi calls it after the CONNACK was written, in either
// way of serving (mqtt.serve).
func (h *connHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if c, ok := cl.Net.Conn.(*conn); ok && c.connectAt != 0 {
		h.s.metrics.connectTook(time.Duration(monotonic() - c.connectAt))
	}
	h.s.metrics.connects(cl.Net.Listener, cl.Properties.ProtocolVersion)
	if h.s.log.Enabled(context.Background(), slog.LevelDebug) { // the arguments are boxed even when not logged
		h.s.log.Debug("client connected", "client_id", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
			"protocol", cl.Properties.ProtocolVersion, "clean", pk.Connect.Clean, "keepalive", pk.Connect.Keepalive)
	}
}

// OnPacketSent marks a connection answered after DISCONNECT or a failed
// CONNACK: the spec allows nothing after those.
func (h *connHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	t := pk.FixedHeader.Type
	if t == packets.Disconnect || (t == packets.Connack && pk.ReasonCode >= packets.ErrUnspecifiedError.Code) {
		if c, ok := cl.Net.Conn.(*conn); ok {
			c.answered.Store(true)
		}
	}
}
