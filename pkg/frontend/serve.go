package frontend

// fleetgate serves each MQTT connection itself (mqtt.serve=lean), with
// mochi's exported API: mochi still decodes every packet (ReadFixedHeader,
// ReadPacket, ParseConnect) and processes it with all its rules and our hooks
// (InjectPacket), but the connection's goroutine, its deadlines, its CONNECT
// sequence and its end are ours. docs/connection-memory.md measures why:
//   - a quiet connection over plain TCP, TLS or WebSocket waits for its
//     next packet with no goroutine at all: it parks in the node's poller
//     (park.go); a busy one waits on the listener's goroutine, its only
//     one, in a call chain under the 1,120 B a 2 KiB stack leaves, so its
//     stack stays at 2 KiB (mochi's reader needs 16 KiB, its WriteLoop
//     4 KiB; a busy WebSocket one's grows to 4 KiB in gorilla's frame
//     reader);
//   - there is no WriteLoop: fleetgate writes everything with WritePacket,
//     and mochi's outbound queue is never used (local fan-out is off);
//   - clients are not in mochi's Server.Clients, which mochi's event loop
//     copies twice a second: the sessions hook's registry replaces it.
//
// The functions that run on the connection's goroutine while it waits
// (establish, establishLean, leanConn.read) keep their frames small; all
// else runs in helpers marked go:noinline, most on short-lived goroutines.

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/listen"
	"github.com/fleetgate/fleetgate/pkg/workers"
)

// busyGap is how close packets must follow each other for a connection to
// count as busy: a busy connection's packets are handled on its own
// goroutine (whose stack grows as under mochi), a packet after a quiet gap
// on a worker (pkg/workers). Handling every packet off the reader on new
// goroutines cost 40 % of the QoS 1 throughput (docs/connection-memory.md,
// e2 against e3). The gap was a second: a device publishing once a second
// then had about half its packets handled on its reader, whose stack grew
// to 16 KiB and was shrunk again at the next GC, over and over (copystack
// and newstack 8 % of the frontend's CPU with 2,000 such devices). With
// 100 ms such a device's packets all go to workers, and its reader keeps
// its 2 KiB: 0.95× the CPU per message, 0.60× the PUBACK p99 and 0.57×
// the RSS with 2,000 devices × 1 msg/s; the closed loop and 10 msg/s
// pairs within the noise (docs/benchmarks.md, run 7).
const busyGap = 100 * time.Millisecond

// leanConn is one connection served by fleetgate.
type leanConn struct {
	s        *Server
	c        *conn
	cl       *mqtt.Client
	listener string
	fh       packets.FixedHeader // the header being handled; reader goroutine, or the goroutine it waits for
	last     int64               // monotonic ns of the last packet; reader goroutine only
	armed    int64               // monotonic ns the read deadline was last moved (0: never); reader goroutine, or the goroutine it waits for
	counted  bool                // counted in mochi's Info.ClientsConnected
	// busy is set while the connection's last two packets came within
	// busyGap of each other: it waits for the next one on its goroutine
	// rather than parked; onWorker is set once its reader runs on a
	// worker (parked before), which handles quiet packets itself.
	busy, onWorker bool
	// consumed counts the bytes of the packets mochi decoded, set against
	// conn.delivered (park.go); the reader's.
	consumed int64
	// handleOff handles a packet on a worker (made at the first quiet
	// spell) and leaves its error in handleErr: one allocation per
	// connection instead of a closure, its error and a job per packet.
	handleOff *workers.Task
	handleErr error
}

// offGoroutine runs f on another goroutine and waits for it, so that f's
// stack growth stays off the caller's stack: on a worker that ran such
// work before when one is free (pkg/workers; in a reconnect storm goroutine
// creation and stack growth were 8 % of the frontend's CPU), else a new one.
func offGoroutine(f func()) { workers.Run(f) }

var monoEpoch = time.Now()

// monotonic returns monotonic nanoseconds.
func monotonic() int64 { return int64(time.Since(monoEpoch)) }

// establishLean serves one connection on the calling goroutine (the
// listener's goroutine of the connection).
func (s *Server) establishLean(listener string, nc net.Conn) error {
	var l *leanConn
	offGoroutine(func() { l = s.leanConnect(listener, nc) })
	if l == nil {
		return nil
	}
	err := l.read()
	if errors.Is(err, errParked) {
		// Its reader runs again on a worker when it has a packet, and
		// ends it then: the listener must not close it.
		return listen.ErrDetached
	}
	offGoroutine(func() { l.end(err) })
	return nil
}

// read waits for each packet's first byte and handles the packet: on this
// goroutine while the connection is busy, on a short-lived one after a
// quiet busyGap. It returns nil when the client was stopped (its
// DISCONNECT, a takeover, the server) and the read error otherwise, as
// mochi's Client.Read does, or errParked when the connection parked (a
// quiet one, park.go).
func (l *leanConn) read() error { return l.serve(false) }

// serve is read; resumed is set for the reader of a parked connection,
// whose first read is not preceded by the check for a stopped client: a
// kick's read then fails as the waiting read would have.
func (l *leanConn) serve(resumed bool) error {
	// handled: this goroutine handled the last packet (or the CONNECT)
	// itself, so the socket is not known to have bytes; a resumed reader
	// was started because it has.
	check, wait, handled := !resumed, false, !resumed
	for {
		if check && l.cl.Closed() {
			return nil
		}
		check = true
		l.fh = packets.FixedHeader{}
		if !l.busy && !wait && l.parks() {
			if handled && l.c.rbuf == nil && l.c.delivered == l.consumed && l.c.try == nil {
				// Nothing read waits in mochi's reader or the lent
				// buffer: the socket is armed at once, without a read
				// that would find it empty (a socket with bytes is
				// reported as soon as it is armed). Over TLS, crypto/tls
				// may hold a record read with the last one: only a read
				// tells.
				if l.c.park(l.s.poller) {
					return errParked
				}
				check, wait = false, true
				continue
			}
			l.c.setNoWait(true)
			err := l.cl.ReadFixedHeader(&l.fh)
			l.c.setNoWait(false)
			if errors.Is(err, errWouldBlock) {
				if l.c.park(l.s.poller) {
					return errParked // l belongs to whoever resumes it
				}
				// Kicked (or not taken by the poller): wait as a busy
				// connection does, where a kick's read fails at once.
				check, wait = false, true
				continue
			}
			if err != nil {
				return err
			}
		} else {
			// A busy connection waits on its goroutine; one that has
			// nothing buffered above its socket waits at most busyGap
			// for its next packet, then parks as a quiet one does.
			quiet := l.busy && !wait && l.parks() && l.c.rbuf == nil && l.c.delivered == l.consumed
			// A reader that keeps a deadline's error (WebSocket: gorilla)
			// waits for the quiet timer outside it, between messages.
			var qw listen.QuietWaiter
			if quiet && l.c.try != nil && !l.c.try.Resumable() {
				qw, _ = l.c.try.(listen.QuietWaiter)
				quiet = qw != nil && qw.Between()
			}
			if quiet {
				l.c.armQuiet(l.last)
			}
			if quiet && qw != nil {
				if err := qw.WaitQuiet(); err != nil {
					if l.c.quietFired(err) {
						l.busy = false
						continue
					}
					return err
				}
				// The next message has begun: it is read without the
				// timer, which must never fire inside gorilla. Close or
				// an expiry since keep their deadline (clearQuiet).
				l.c.clearQuiet()
			}
			if err := l.cl.ReadFixedHeader(&l.fh); err != nil {
				if quiet && l.c.quietFired(err) {
					l.busy = false
					continue
				}
				return err
			}
		}
		wait, handled = false, true
		var err error
		now := monotonic()
		l.busy = now-l.last < int64(busyGap)
		if !l.busy && l.c.quietAt != 0 {
			l.c.clearQuiet() // no longer busy: no timer
		}
		if l.busy || l.onWorker {
			err = l.handle()
		} else {
			if l.handleOff == nil {
				l.handleOff = workers.NewTask(func() { l.handleErr = l.handle() })
			}
			l.handleOff.Run()
			err = l.handleErr
		}
		l.last = now
		if err != nil {
			return err
		}
	}
}

// handle reads the rest of the packet whose header was read and has mochi
// process it (processPacket: our OnPacketRead, OnPublish and ACL hooks, and
// mochi's own rules), then renews the read deadline. A processing error
// ends the connection; conn.finish sends an MQTT 5 client its reason code
// (mochi's receivePacket would send the same DISCONNECT).
//
//go:noinline
func (l *leanConn) handle() error {
	pk, err := l.cl.ReadPacket(&l.fh)
	if err != nil {
		return err
	}
	l.consumed += packetBytes(&l.fh)
	if err := l.s.mochi.InjectPacket(l.cl, pk); err != nil {
		return err
	}
	l.deadline()
	return nil
}

// deadline sets the read deadline for the next packet: 1.5 × the
// keep-alive in force [MQTT-3.1.2-22], none for a keep-alive of 0.
// conn.SetDeadline adds the half second of an odd keep-alive and bounds it
// by mqtt.idle-timeout, as it does for mochi's deadlines.
//
// A busy connection moves its deadline at most once per rearmGap, and sets
// it rearmGap further out: it never comes before 1.5 × the keep-alive after
// the last packet, and at most rearmGap after. Moving it for every packet
// (the clock read twice and the runtime's read and write timers reset) was
// 3 % of the frontend's CPU in the closed-loop pairs.
//
//go:noinline
func (l *leanConn) deadline() {
	now := monotonic()
	if l.armed != 0 && now-l.armed < int64(rearmGap) {
		return
	}
	l.armed = now
	var t time.Time
	if ka := l.cl.State.Keepalive; ka > 0 {
		t = time.Now().Add(time.Duration(ka+ka/2)*time.Second + rearmGap)
	}
	l.c.arm(t)
}

// rearmGap: see leanConn.deadline.
const rearmGap = 100 * time.Millisecond

// leanConnect accepts the connection and runs its CONNECT. It returns nil
// when the connection ended (refused, or closed before or during CONNECT);
// the connection is then finished and untracked.
//
//go:noinline
func (s *Server) leanConnect(listener string, nc net.Conn) *leanConn {
	if !s.trackConn() {
		_ = nc.Close() // accepted just as the node started draining
		return nil
	}
	c := newConn(nc, s.cfg.MQTT.Admission.IdleTimeout, s.deadlines, s.reads)
	// No deadline applies before CONNECT otherwise [MQTT-3.1.4-1]. The
	// wheel holds it, as every later one (conn.arm): the socket gets no
	// deadline of its own, so no runtime timer per connection.
	s.deadlines.set(c, time.Now().Add(s.cfg.MQTT.ConnectTimeout))
	l := &leanConn{s: s, c: c, listener: listener, cl: s.mochi.NewClient(c, listener, "", false)}
	established, err := l.connect()
	if err == nil {
		if s.poller != nil {
			l.parkable(s.poller)
		}
		return l
	}
	if established {
		// The session was set up, so its end runs as for any connection.
		l.end(err)
		return nil
	}
	l.cl.Stop(err)
	s.connEnded(listener, nc, c, err)
	return nil
}

// connect reads the CONNECT and answers it, in the order of mochi's
// attachClient: read and parse, mochi's MaximumClients, the CONNECT's
// validity, OnConnect (mqtt.max-clients, mqtt.max-keepalive), the
// keep-alive deadline, authentication, OnSessionEstablish (the session
// store, local takeover), CONNACK, OnSessionEstablished (delivery starts).
// established reports that OnSessionEstablish ran: the connection's end
// then runs the disconnect hooks.
func (l *leanConn) connect() (established bool, err error) {
	s, cl := l.s, l.cl
	if err := cl.ReadFixedHeader(&l.fh); err != nil {
		return false, err
	}
	if l.fh.Type != packets.Connect {
		return false, packets.ErrProtocolViolationRequireFirstConnect // [MQTT-3.1.0-1]
	}
	pk, err := cl.ReadPacket(&l.fh)
	if err != nil {
		return false, err
	}
	l.consumed += packetBytes(&l.fh)
	cl.ParseConnect(l.listener, pk)
	caps := s.mochi.Options.Capabilities
	if atomic.LoadInt64(&s.mochi.Info.ClientsConnected) >= caps.MaximumClients {
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable
		}
		_ = s.mochi.SendConnack(cl, code, false, nil)
		return false, packets.ErrServerBusy
	}
	if code := validConnect(cl, pk, caps); code != packets.CodeSuccess {
		_ = s.mochi.SendConnack(cl, code, false, nil) // [MQTT-3.2.2-7] [MQTT-3.1.4-6]
		return false, code
	}
	if err := s.hooks.OnConnect(cl, pk); err != nil {
		return false, err
	}
	l.deadline()
	if !s.hooks.OnConnectAuthenticate(cl, pk) { // [MQTT-3.1.4-2]
		_ = s.mochi.SendConnack(cl, packets.ErrBadUsernameOrPassword, false, nil)
		return false, packets.ErrBadUsernameOrPassword
	}
	if n := atomic.AddInt64(&s.mochi.Info.ClientsConnected, 1); n > atomic.LoadInt64(&s.mochi.Info.ClientsMaximum) {
		atomic.StoreInt64(&s.mochi.Info.ClientsMaximum, n) // a $SYS figure
	}
	l.counted = true
	s.hooks.OnSessionEstablish(cl, pk)
	// The sessions hook sets Session Present from the store (OnPacketEncode).
	if err := s.mochi.SendConnack(cl, packets.CodeSuccess, false, nil); err != nil { // [MQTT-3.2.0-1]
		return true, err
	}
	s.hooks.OnSessionEstablished(cl, pk)
	return true, nil
}

// validConnect checks a CONNECT beyond its own validity (ConnectValidate):
// an MQTT 3.1.1 client without a client id must ask for a clean session
// [MQTT-3.1.3-7] (CONNACK 0x02), the protocol version must be one the
// server takes [MQTT-3.1.2-2], and the will must fit the server's maximum
// QoS [MQTT-3.2.2-12] and retain support [MQTT-3.2.2-13].
func validConnect(cl *mqtt.Client, pk packets.Packet, caps *mqtt.Capabilities) packets.Code {
	if code := pk.ConnectValidate(); code != packets.CodeSuccess { // [MQTT-3.1.4-1]
		return code
	}
	v := cl.Properties.ProtocolVersion
	switch {
	case v < 5 && !pk.Connect.Clean && pk.Connect.ClientIdentifier == "":
		return packets.ErrUnspecifiedError // 3.1.1: 0x02 Identifier rejected
	case v < caps.MinimumProtocolVersion:
		return packets.ErrUnsupportedProtocolVersion
	case cl.Properties.Will.Qos > caps.MaximumQos:
		return packets.ErrQosNotSupported
	case cl.Properties.Will.Retain && caps.RetainAvailable == 0:
		return packets.ErrRetainNotSupported
	}
	return packets.CodeSuccess
}

// end ends a connection whose session was set up, as mochi does after its
// read loop (Server.endSession: the will, OnDisconnect, mochi's client state
// of a session that expires), and finishes the connection (conn.finish: the
// owed MQTT 5 DISCONNECT, the close).
//
//go:noinline
func (l *leanConn) end(err error) {
	cl := l.cl
	l.s.endSession(cl, err)
	cl.Stop(nil)
	if l.counted {
		atomic.AddInt64(&l.s.mochi.Info.ClientsConnected, -1)
	}
	l.s.connEnded(l.listener, l.c.Conn, l.c, err)
}

// endSession runs what mochi's attachClient runs after its read loop, for a
// connection whose session was set up (OnSessionEstablish ran): the will
// when the connection ended without DISCONNECT [MQTT-3.1.2-8] (our OnWill
// schedules it from the session store; mochi's local publish of it is a
// no-op for fleetgate, whose fan-out is off), the will discarded after a
// normal DISCONNECT [MQTT-3.14.4-3] [MQTT-3.1.2-10], OnDisconnect, and
// mochi's client state cleared for a session that expires. It reports
// whether the session expires with the connection.
func (s *Server) endSession(cl *mqtt.Client, err error) (expire bool) {
	if err != nil {
		if atomic.LoadUint32(&cl.Properties.Will.Flag) == 1 {
			s.hooks.OnWill(cl, cl.Properties.Will)
		}
		cl.Stop(err)
	} else {
		// A normal DISCONNECT drops the will [MQTT-3.1.2-10]: its flag
		// cleared atomically, as a takeover notice clears it from another
		// goroutine (sessions' closeTakenOver); assigning the whole struct
		// raced with that store.
		atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	}
	expire = (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
	s.hooks.OnDisconnect(cl, err, expire)
	if expire {
		cl.ClearInflights()
		s.mochi.UnsubscribeClient(cl)
	}
	return expire
}
