package frontend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/acl"
	"github.com/fleetgate/fleetgate/pkg/auth"
	"github.com/fleetgate/fleetgate/pkg/ingest"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Reasons of refused CONNECTs decided here rather than by pkg/auth.
const (
	reasonTokenRules = "token_rules"     // the token's rules claim does not parse
	reasonNotOwner   = "client_id_owned" // another identity holds the client id on this node
	reasonWill       = "will_not_authorized"
	reasonWillTopic  = "will_topic_limit"
	// reasonRevoked: the credentials were reloaded while the CONNECT was
	// checked, and no longer hold its password or token.
	reasonRevoked = "revoked"
)

// maxRevokedLogged bounds the per-connection log lines of one reload's
// revocations; the summary line counts them all.
const maxRevokedLogged = 20

// authHook decides who a CONNECT is (pkg/auth), what it may publish and
// subscribe to (pkg/acl), and that its client id is not another identity's
// on this node (pkg/sessions checks the session store). mochi ORs the
// answers of all auth hooks, so it must be the only one.
//
// After authentication the client's Username holds the authenticated
// identity and nothing else ("" for an anonymous client): the record header
// mqtt.username, session events and session ownership all read it.
type authHook struct {
	mqtt.HookBase

	chain    *auth.Chain
	rules    *acl.Holder
	owners   interface{ Refuses(*mqtt.Client) error }
	server   *mqtt.Server
	log      *slog.Logger
	metrics  *metrics
	atExpiry bool // close connections whose credential expired
	// topics bounds will topics as every other topic name.
	topics topic.Limits

	// What an authenticated client may do is held by its connection
	// (conn.policy), not in a map here: one pointer load per PUBLISH, and
	// no map entry per connection.
	refused sync.Map // *mqtt.Client → byte: the CONNACK code of a refused CONNECT
	// held are the connections whose identity rests on a password, a
	// token or (with a CRL) a certificate: each reload of the credentials
	// checks them again and closes those it revokes (revoke). A plain map
	// under a mutex, whose value (the credential) the connection holds:
	// an entry is memory per connection of a fleet (a pointer in a map
	// slot here, against 150 bytes in a sync.Map), written once at
	// CONNECT and once at the end.
	heldMu sync.Mutex
	held   map[*conn]struct{}
}

// heldCredential is what a connection's identity rests on.
type heldCredential struct {
	cl   *mqtt.Client
	name string
	cred auth.Credential
}

func (h *authHook) ID() string { return "fleetgate-auth" }

func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketEncode, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnConnectAuthenticate authenticates the CONNECT, builds the connection's
// policy and checks its will topic against it. A refused CONNECT gets the
// CONNACK code of its reason (OnPacketEncode), never a hint of which part
// of the credentials was wrong beyond what the code says.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	c, ok := cl.Net.Conn.(*conn)
	if !ok {
		// Every listener's connection is served through a conn
		// (Server.establish); one that is not has nowhere to hold its
		// policy, and is refused rather than left unchecked.
		h.refuse(cl, serverUnavailable(cl), "error", slog.String("err", "connection not served by the frontend"))
		return false
	}
	req := auth.Request{
		ClientID:         cl.ID,
		Username:         string(pk.Connect.Username),
		UsernameSet:      pk.Connect.UsernameFlag,
		PeerCertificates: peerCertificates(cl.Net.Conn),
	}
	if pk.Connect.PasswordFlag {
		req.Password = pk.Connect.Password
	}
	if ap, err := netip.ParseAddrPort(cl.Net.Remote); err == nil {
		req.Remote = ap
	}
	id, err := h.chain.Authenticate(req)
	if err != nil {
		var f *auth.Failure
		reason := "error"
		if errors.As(err, &f) {
			reason = string(f.Reason)
		}
		h.refuse(cl, auth.ConnackCode(err, cl.Properties.ProtocolVersion), reason, slog.Any("err", err))
		return false
	}
	// Only the authenticated identity stays: a username an anonymous
	// client sent names nobody.
	cl.Properties.Username = nil
	if id.Name != "" {
		cl.Properties.Username = []byte(id.Name)
	}

	var extra []acl.Rule
	if len(id.Rules) > 0 {
		if extra, err = acl.ParseTokenRules(id.Rules); err != nil {
			h.refuse(cl, notAuthorized(cl), reasonTokenRules, slog.Any("err", err))
			return false
		}
	}
	policy, err := h.rules.For(acl.Subject{Identity: id.Name, ClientID: cl.ID, Groups: id.Groups, Extra: extra})
	if err != nil {
		h.refuse(cl, notAuthorized(cl), reasonTokenRules, slog.Any("err", err))
		return false
	}
	if err := h.owners.Refuses(cl); err != nil {
		// Once this returns true mochi takes a local connection of the
		// same client id over; another identity's must not be.
		h.refuse(cl, notAuthorized(cl), reasonNotOwner)
		return false
	}
	if pk.Connect.WillFlag {
		if err := h.topics.Check(pk.Connect.WillTopic); err != nil {
			// MQTT 5: CONNACK 0x90 (Topic Name invalid). MQTT 3.1.1 has
			// no return code for it: the connection is closed without a
			// CONNACK [MQTT-3.2.2-6].
			h.refuse(cl, packets.ErrTopicNameInvalid.Code, reasonWillTopic, slog.Int("will_topic_bytes", len(pk.Connect.WillTopic)), slog.Any("err", err))
			if cl.Properties.ProtocolVersion < 5 {
				_ = cl.Net.Conn.Close()
			}
			return false
		}
	}
	if pk.Connect.WillFlag && !policy.AllowPublish(pk.Connect.WillTopic) {
		h.refuse(cl, notAuthorized(cl), reasonWill, slog.String("will_topic", pk.Connect.WillTopic))
		return false
	}

	if id.Credential.Revocable() {
		h.hold(c, heldCredential{cl: cl, name: id.Name, cred: id.Credential})
		// A reload between Authenticate and the line above would have
		// missed this connection: check it again under the credentials
		// loaded now.
		if !h.chain.Valid(id.Name, id.Credential) {
			h.release(c)
			h.refuse(cl, id.Credential.RevokedCode().Byte(cl.Properties.ProtocolVersion), reasonRevoked)
			return false
		}
	}
	c.policy.Store(policy)
	if h.atExpiry && !id.Expires.IsZero() {
		// In the node's deadline wheel: no runtime timer per connection.
		c.wheel.setCredential(c, id.Expires, func() { h.expired(cl) })
	}
	h.metrics.authenticated(id.Source)
	return true
}

// notAuthorized is CONNACK Not Authorized in cl's protocol.
func notAuthorized(cl *mqtt.Client) byte {
	if cl.Properties.ProtocolVersion >= 5 {
		return packets.ErrNotAuthorized.Code
	}
	return packets.Err3NotAuthorized.Code
}

// serverUnavailable is CONNACK Server Unavailable in cl's protocol.
func serverUnavailable(cl *mqtt.Client) byte {
	if cl.Properties.ProtocolVersion >= 5 {
		return packets.ErrServerUnavailable.Code
	}
	return packets.Err3ServerUnavailable.Code
}

// refuse records why cl's CONNECT is refused and the code its CONNACK
// carries. The log line names the client and the reason, never a password
// or token (auth.Failure and auth.Request keep them out).
func (h *authHook) refuse(cl *mqtt.Client, code byte, reason string, attrs ...any) {
	h.refused.Store(cl, code)
	h.metrics.authFailed(reason)
	h.log.Info("connect refused", append([]any{"client_id", cl.ID, "remote", cl.Net.Remote, "reason", reason}, attrs...)...)
}

// expired closes a connection whose credential (a token's exp, a
// certificate's NotAfter) has passed: MQTT 5 gets DISCONNECT 0xA0 (Maximum
// connect time).
func (h *authHook) expired(cl *mqtt.Client) {
	if cl.Closed() {
		return
	}
	h.metrics.authExpired()
	h.log.Info("credential expired; closing connection", "client_id", cl.ID, "username", string(cl.Properties.Username))
	if cl.Properties.ProtocolVersion >= 5 {
		_ = h.server.DisconnectClient(cl, packets.ErrMaxConnectTime)
		return
	}
	cl.Stop(packets.ErrMaxConnectTime)
}

// checkCRLAge warns when the CRL loaded is past its nextUpdate: its issuer
// has published a newer list, which may revoke more certificates. The list
// stays in force (refusing every certificate would lock the fleet out
// because a publisher is late).
func (h *authHook) checkCRLAge() {
	if next := h.chain.CRLNextUpdate(); !next.IsZero() && time.Now().After(next) {
		h.log.Warn("the CRL (auth.cert.crl-file) is past its nextUpdate: its issuer has published a newer one; replace the file", "next_update", next)
	}
}

// revoke closes the connections whose credential the credentials loaded
// now no longer hold: a user removed from the password file or given a new
// password, a JWT verification key removed, a client certificate newly on
// the CRL. MQTT 5 clients get DISCONNECT
// 0x87 (Not authorized) first. Their sessions stay, their owners' own; a
// will is published as at any end that is not the client's DISCONNECT.
func (h *authHook) revoke(why string) {
	h.heldMu.Lock()
	held := make([]heldCredential, 0, len(h.held))
	keys := make([]*conn, 0, len(h.held))
	for c := range h.held {
		held, keys = append(held, c.held), append(keys, c)
	}
	h.heldMu.Unlock()
	bySource := map[string]int{}
	total := 0
	for i, hc := range held {
		if hc.cl.Closed() {
			h.release(keys[i])
			continue
		}
		if h.chain.Valid(hc.name, hc.cred) {
			continue
		}
		h.release(keys[i])
		source := hc.cred.Source()
		bySource[source]++
		total++
		h.metrics.authRevoked(source)
		if total <= maxRevokedLogged {
			h.log.Info("credential revoked; closing connection", "client_id", hc.cl.ID, "username", hc.name, "source", source)
		}
		// Each on a goroutine of its own: the DISCONNECT's write may wait
		// for a slow client's socket, and must not hold up the others.
		go func(cl *mqtt.Client) {
			if cl.Properties.ProtocolVersion >= 5 {
				_ = h.server.DisconnectClient(cl, packets.ErrNotAuthorized)
			} else {
				cl.Stop(packets.ErrNotAuthorized)
			}
		}(hc.cl)
	}
	if total > 0 {
		h.log.Warn("connections closed: the reloaded credentials revoke theirs", "trigger", why,
			"connections", total, "password", bySource[auth.SourcePassword], "jwt", bySource[auth.SourceJWT], "cert", bySource[auth.SourceCert])
	}
}

// hold registers a connection whose credential a reload may revoke.
func (h *authHook) hold(c *conn, hc heldCredential) {
	h.heldMu.Lock()
	if h.held == nil {
		h.held = map[*conn]struct{}{}
	}
	c.held = hc
	h.held[c] = struct{}{}
	h.heldMu.Unlock()
}

// release forgets a connection of hold.
func (h *authHook) release(c *conn) {
	h.heldMu.Lock()
	delete(h.held, c)
	c.held = heldCredential{}
	h.heldMu.Unlock()
}

// OnPacketEncode gives the CONNACK of a refused CONNECT its reason's code
// (mochi writes Bad Username or Password for every refusal).
func (h *authHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	if code, ok := h.refused.LoadAndDelete(cl); ok {
		pk.ReasonCode = code.(byte)
		pk.SessionPresent = false
	}
	return pk
}

// OnDisconnect forgets the connection.
func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.refused.Delete(cl)
	if c, ok := cl.Net.Conn.(*conn); ok {
		h.release(c)
		c.policy.Store(nil)
		c.wheel.setCredential(c, time.Time{}, nil)
	}
}

// OnACLCheck allows what reaches it: PUBLISH is decided by the ingest hook
// (AllowPublish) once its topic alias is resolved, SUBSCRIBE by
// pkg/subscribe (AllowSubscribe); mochi sees neither refused.
func (h *authHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// AllowPublish implements ingest.Authorizer.
func (h *authHook) AllowPublish(cl *mqtt.Client, topic string) bool {
	p := policyOf(cl)
	return p != nil && p.AllowPublish(topic)
}

// QuotaOf implements ingest.Quotas: the rules file's quota for the
// client's identity or groups, if it sets one.
func (h *authHook) QuotaOf(cl *mqtt.Client) (ingest.QuotaOverride, uint64, bool) {
	p := policyOf(cl)
	if p == nil {
		return ingest.QuotaOverride{}, 0, false
	}
	q, ok := p.Quota()
	return ingest.QuotaOverride{Rate: q.Rate, Burst: q.Burst, ByteRate: q.ByteRate}, p.Generation(), ok
}

// AllowSubscribe implements subscribe.Authorizer.
func (h *authHook) AllowSubscribe(cl *mqtt.Client, filter string) bool {
	p := policyOf(cl)
	return p != nil && p.AllowSubscribe(filter)
}

// AllowRead implements delivery.Authorizer: every message written to a
// subscriber is checked against the rules in force, so a reload that takes
// a topic away stops its deliveries through subscriptions granted before.
func (h *authHook) AllowRead(cl *mqtt.Client, topic string) (allow, known bool) {
	p := policyOf(cl)
	if p == nil {
		return false, false
	}
	return p.AllowRead(topic), true
}

// policyOf is what cl may do; nil before it authenticated and after it
// ended (nothing is allowed then).
func policyOf(cl *mqtt.Client) *acl.Policy {
	if c, ok := cl.Net.Conn.(*conn); ok {
		return c.policy.Load()
	}
	return nil
}

// reload reads the credentials (password file, JWT keys) and the rules file
// again. A file that fails keeps what was loaded before (never an open
// door); the failure is logged and counted.
func (h *authHook) reload(ctx context.Context, why string) {
	if err := h.chain.Load(); err != nil {
		h.metrics.reloaded(ctx, "credentials", false)
		h.log.Error("credentials not reloaded; the previous ones stay in force", "trigger", why, "err", err)
	} else {
		h.metrics.reloaded(ctx, "credentials", true)
		h.log.Info("credentials reloaded", "trigger", why, "methods", h.chain.Methods())
		h.checkCRLAge()
		h.revoke(why)
	}
	if h.rules.Open() {
		return
	}
	gen := h.rules.Generation()
	if err := h.rules.Reload(); err != nil {
		h.metrics.reloaded(ctx, "rules", false)
		h.log.Error("authorization rules not reloaded; the previous ones stay in force", "trigger", why, "file", h.rules.Path(), "err", err)
		return
	}
	h.metrics.reloaded(ctx, "rules", true)
	if g := h.rules.Generation(); g != gen {
		r := h.rules.Rules()
		h.log.Info("authorization rules reloaded", "trigger", why, "file", h.rules.Path(), "rules", r.Len(), "identities", r.Identities(), "groups", r.Groups())
		releaseParseGarbage()
	}
}

// releaseParseGarbage returns to the OS the memory that reading a rules
// file took beyond what its compiled rules keep: parsing the YAML of a
// file that lists 100,000 identities (3.5 MB) allocates about 110 MB (a
// live peak of about 50 MB) for 6–8 MB of compiled rules, and the runtime
// would keep most of those pages resident, as RSS that no connection uses,
// for minutes or for good (docs/benchmarks.md, "The fleet authenticated").
// One forced collection per load or changed reload; a reload that finds
// the same bytes costs nothing.
func releaseParseGarbage() { debug.FreeOSMemory() }

// peerCertificates returns the verified client certificate chain of a TLS
// connection (leaf first), nil for any other connection.
func peerCertificates(c net.Conn) []*x509.Certificate {
	for c != nil {
		if s, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
			if cs := s.ConnectionState(); len(cs.VerifiedChains) > 0 {
				return cs.VerifiedChains[0]
			}
			return nil
		}
		switch w := c.(type) {
		case *conn:
			c = w.Conn
		case interface{ NetConn() net.Conn }:
			c = w.NetConn()
		default:
			return nil
		}
	}
	return nil
}
