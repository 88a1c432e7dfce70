package frontend

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/acl"
	"github.com/fleetgate/fleetgate/pkg/ingest"
	"github.com/fleetgate/fleetgate/pkg/listen"
	"github.com/fleetgate/fleetgate/pkg/workers"
)

// conn wraps every accepted connection so the frontend can answer what mochi
// leaves unanswered: it holds the socket open after mochi closes it until the
// frontend has sent MQTT 5 clients the DISCONNECT reason code for a
// malformed packet, an oversize packet, a keep-alive timeout or a server
// decision (mochi only closes the socket in those cases).
type conn struct {
	net.Conn

	closing atomic.Bool // mochi called Close; the socket stays open until finish
	// answered is set once a DISCONNECT, or a CONNACK with a failure code,
	// was written: the client has its reason and gets nothing more.
	answered atomic.Bool

	// idle is mqtt.idle-timeout: the furthest a deadline mochi sets may
	// lie ahead (0: no bound); idled is set while the deadline in force is
	// that bound rather than mochi's 1.5 × keep-alive.
	idle  time.Duration
	idled atomic.Bool
	// admitted is set when the CONNECT counted against mqtt.max-clients;
	// oddKeepAlive when the keep-alive in force is an odd number of
	// seconds. Both are written and read on the connection's goroutine.
	admitted     bool
	oddKeepAlive bool
	// connectAt is when its CONNECT was read and parsed (monotonic ns, set
	// by the connection hook's OnConnect), for
	// fleetgate_frontend_connect_duration_seconds; the connection's
	// goroutine only, as admitted.
	connectAt int64
	// established and disconnected record that the disconnect hooks are
	// owed (OnSessionEstablish ran) and were run (OnDisconnect), for
	// mqtt.serve=mochi, whose attachClient returns without them when the
	// CONNACK cannot be written (establishMochi); the connection's
	// goroutine only.
	established, disconnected bool

	// The quiet timer of a busy connection (quiet.go): the socket's read
	// deadline, set by the reader at most once per busyGap, ends its wait
	// for the next packet once it has been quiet for busyGap, so that it
	// parks. quietAt is that deadline (monotonic ns; 0: none set) and
	// quietMark the bytes delivered when the wait began; both the
	// reader's. dmu orders the timer against Close and expire, which set
	// the deadline in the past for good (interrupted): the reader never
	// undoes theirs.
	quietAt, quietMark int64
	dmu                sync.Mutex
	interrupted        bool

	mu     sync.Mutex
	client *mqtt.Client // set by the connection hook after CONNECT

	// policy is what the authenticated client may publish and subscribe
	// to (authHook), set at CONNECT and cleared at its end.
	policy atomic.Pointer[acl.Policy]
	// held is what its identity rests on when a reload may revoke it
	// (authHook.hold), guarded by authHook.heldMu.
	held heldCredential

	// wheel is the node's deadline wheel (deadlines): it holds the expiry
	// of the connection's credential in place of a timer, and with
	// mqtt.serve=lean the deadline of its reads in place of the socket,
	// from the CONNECT's on. deadline and credential (unix ns, 0: none),
	// onCredential and tick are guarded by wheel.mu.
	wheel                *deadlines
	deadline, credential int64
	onCredential         func()
	tick                 int64

	// raw is the socket when the bytes written to the connection reach it
	// as they are (TCP, PROXY protocol over TCP), nil otherwise (TLS,
	// WebSocket): see RawWriter.
	raw syscall.RawConn

	// Reads (conn.Read; the connection's reader only, never two at once).
	// pool lends the buffers reads fill (nil: reads go straight to Conn);
	// rbuf is the one lent while it holds bytes not yet returned,
	// (*rbuf)[rr:rw]; direct is set when reading the socket itself (raw)
	// is reading the connection: plain TCP, or a PROXY protocol connection
	// once its header and what was read with it were returned. rfn is the
	// raw read's step (rawRead), made at its first use; rerrno the error
	// of its read system call (rw -1: the end of the stream).
	pool   *readPool
	rbuf   *[]byte
	rr, rw int32
	direct bool
	rfn    func(fd uintptr) bool
	rerrno syscall.Errno

	// Parking (park.go). parking holds parkedBit and kickedBit; noWait
	// (the reader's) makes a read with nothing to read fail with
	// errWouldBlock instead of waiting; poller is the node's (nil: the
	// connection never parks), resume starts its reader on a worker, fd
	// is its socket and polled records that the socket is in the poller
	// (the reader's, and the poller's under its lock).
	parking atomic.Uint32
	// delivered counts the bytes Read returned (to mochi's reader), which
	// the connection's reader sets against the bytes of the packets mochi
	// decoded (leanConn.consumed): equal, nothing read waits above the
	// socket. The reader's.
	delivered int64
	noWait    bool
	// try is the socket under a TLS connection, or a WebSocket
	// connection, read without waiting when noWait is set
	// (listen.TryReader): a quiet TLS or WebSocket connection parks too,
	// once crypto/tls (gorilla's frame reader) holds no byte of its next
	// record (frame). nil elsewhere.
	try    listen.TryReader
	polled bool
	fd     int32
	poller *poller
	resume *workers.Job
}

// newConn wraps an accepted connection.
func newConn(nc net.Conn, idle time.Duration, wheel *deadlines, pool *readPool) *conn {
	c := &conn{Conn: nc, idle: idle, wheel: wheel, raw: rawSocket(nc), pool: pool}
	if _, ok := nc.(*net.TCPConn); ok && c.raw != nil {
		c.direct = rawReads
	}
	if rawReads {
		if tc, ok := nc.(*tls.Conn); ok {
			c.try, _ = listen.TryReaderOf(tc.NetConn())
		} else {
			c.try, _ = listen.TryReaderOf(nc) // WebSocket
		}
	}
	return c
}

// setNoWait makes the connection's reads that find nothing fail with
// errWouldBlock (on) or wait (off).
func (c *conn) setNoWait(on bool) {
	c.noWait = on
	if c.try != nil {
		c.try.SetNoWait(on)
	}
}

// socket is the socket whose readiness a parked connection waits for: the
// TCP connection itself, or the one under TLS.
func (c *conn) socket() syscall.RawConn {
	if c.try != nil {
		return c.try.Socket()
	}
	return c.raw
}

// rawSocket returns the socket of nc when what is written to nc goes to it
// unchanged: a TCP connection, or one with a PROXY protocol header (read
// before the first packet; writes pass through).
func rawSocket(nc net.Conn) syscall.RawConn {
	if !rawReads {
		// No system calls on the socket itself on this system, neither the
		// reads nor the acks' writes (ingest's writeFD).
		return nil
	}
	if p, ok := nc.(interface{ Raw() net.Conn }); ok {
		nc = p.Raw()
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// RawWriter implements ingest.RawWriter: the ingest hook writes the acks
// Kafka's answer completed straight to the socket, without blocking, and
// leaves them to a goroutine of their own only when the socket is full.
func (c *conn) RawWriter() (syscall.RawConn, bool) { return c.raw, c.raw != nil }

// NonBlocking implements ingest.NonBlockingWriter: a TLS connection whose
// socket holds nothing back for the client takes a write (of a caller
// holding the client's lock) without waiting (pkg/listen's nbConn).
func (c *conn) NonBlocking() bool {
	tc, ok := c.Conn.(*tls.Conn)
	return ok && listen.NonBlocking(tc.NetConn())
}

// Close stops reads and writes at once (waking the read loop) but leaves the
// socket to finish.
func (c *conn) Close() error {
	if c.closing.CompareAndSwap(false, true) {
		c.interrupt()
		c.kick()
	}
	return nil
}

// SetDeadline is ignored once closing, so mochi's read loop cannot push the
// deadline set by Close into the future again. mochi calls it before every
// packet it reads with 1.5 × keep-alive ahead, or no deadline for a
// keep-alive of 0 [MQTT-3.1.2-22]; no deadline lies further ahead than
// mqtt.idle-timeout, so that a connection that sends nothing cannot live
// forever.
func (c *conn) SetDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetDeadline(c.bound(t))
}

// arm sets the deadline of the connection's next read as SetDeadline does,
// in the wheel instead of the socket (deadlines).
func (c *conn) arm(t time.Time) {
	if c.closing.Load() {
		return
	}
	c.wheel.set(c, c.bound(t))
}

// expire ends the wait of a read whose deadline in the wheel passed: the
// socket's deadline in the past fails it with a timeout, as the socket's
// own deadline would have.
func (c *conn) expire() {
	c.interrupt()
	c.kick() // a parked connection has no read to fail: its reader runs again
}

// interrupt sets the socket's deadline in the past, for good: a waiting
// read fails, and so does every later one.
func (c *conn) interrupt() {
	c.dmu.Lock()
	c.interrupted = true
	_ = c.Conn.SetDeadline(time.Now())
	c.dmu.Unlock()
}

// bound is the deadline t as the connection enforces it: with the half
// second mochi's arithmetic drops from an odd keep-alive, and no further
// ahead than mqtt.idle-timeout (recording in idled which one is in force).
func (c *conn) bound(t time.Time) time.Time {
	if c.oddKeepAlive && !t.IsZero() {
		// One and a half times the keep-alive [MQTT-3.1.2-22]: mochi's
		// integer arithmetic drops the half second of an odd keep-alive
		// (1 s gives 1 s), so a client pinging on time would race it.
		t = t.Add(time.Second / 2)
	}
	if c.idle > 0 {
		limit := time.Now().Add(c.idle)
		capped := t.IsZero() || t.After(limit)
		c.idled.Store(capped)
		if capped {
			t = limit
		}
	}
	return t
}

// SetReadDeadline: see SetDeadline.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline: see SetDeadline.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) setClient(cl *mqtt.Client) {
	c.mu.Lock()
	c.client = cl
	c.mu.Unlock()
}

func (c *conn) mqttClient() *mqtt.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

// disconnectReason decides the reason code an MQTT 5 client is owed after its
// connection ended with err, and a bounded metric label for it.
func (c *conn) disconnectReason(err error) (code packets.Code, label string, owed bool) {
	cl := c.mqttClient()
	if cl == nil {
		if err == nil {
			return packets.Code{}, "client_disconnect", false
		}
		return packets.Code{}, "before_connect", false
	}
	// mochi stops the client with the error that ended it, and the ingest
	// hook with the reason it chose; the first cause is kept. mochi's read
	// loop may return nil for a client stopped by someone else.
	if cause := cl.StopCause(); cause != nil {
		err = cause
	}
	if err == nil {
		return packets.Code{}, "client_disconnect", false
	}
	var pc packets.Code
	if errors.As(err, &pc) {
		if pc.Code < packets.ErrUnspecifiedError.Code {
			return packets.Code{}, "client_disconnect", false // 0x00, or 0x04 with will
		}
		pc = specCode(pc)
		return pc, reasonLabel(pc), true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if c.idled.Load() {
			// Silent for mqtt.idle-timeout: to the client it is its keep-alive
			// that ran out, the closest code the spec has.
			return packets.ErrKeepAliveTimeout, "idle_timeout", true
		}
		return packets.ErrKeepAliveTimeout, "keepalive_timeout", true // [MQTT-3.1.2-22]
	}
	return packets.Code{}, "connection_lost", false
}

// specCode corrects mochi's reason codes where the spec says otherwise.
func specCode(c packets.Code) packets.Code {
	if c == packets.ErrProtocolViolationQosOutOfRange {
		// Both QoS bits set makes a Malformed Packet [MQTT-3.3.1-4].
		return packets.ErrMalformedQos
	}
	return c
}

// reasonLabel maps a reason code to a bounded label.
func reasonLabel(c packets.Code) string {
	switch c.Code {
	case 0x80:
		return "unspecified_error"
	case 0x81:
		return "malformed_packet"
	case 0x82:
		return "protocol_error"
	case 0x87:
		return "not_authorized"
	case 0x89:
		return "server_busy"
	case 0x8B:
		return "server_shutting_down"
	case 0x8E:
		return "session_taken_over"
	case 0x90:
		return "topic_name_invalid"
	case 0x93:
		return "receive_maximum_exceeded"
	case 0x94:
		return "topic_alias_invalid"
	case 0x95:
		return "packet_too_large"
	case 0x97:
		return "quota_exceeded"
	case 0x9C:
		return "use_another_server"
	}
	return "other_error"
}

// finish sends the owed DISCONNECT, then closes the socket.
func (c *conn) finish(code packets.Code, owed bool) {
	c.unpoll()
	cl := c.mqttClient()
	if owed && cl != nil && cl.Properties.ProtocolVersion == 5 && !c.answered.Load() {
		pk := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Disconnect},
			ReasonCode:      code.Code,
			ProtocolVersion: 5,
		}
		if !cl.Properties.Props.RequestProblemInfoFlag || cl.Properties.Props.RequestProblemInfo != 0 {
			pk.Properties.ReasonString = code.Reason // [MQTT-3.14.2-1]
		}
		var buf bytes.Buffer
		if err := pk.DisconnectEncode(&buf); err == nil {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Conn.Write(buf.Bytes())
		}
	}
	if owed {
		c.lingeringClose()
		return
	}
	_ = c.Conn.Close()
}

// lingeringClose half-closes the connection and discards what the client
// still sends for a moment before closing. Closing a socket with unread
// input makes the kernel send a reset, which can destroy the DISCONNECT the
// client has not read yet.
func (c *conn) lingeringClose() {
	defer c.Conn.Close()
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	_, _ = io.CopyN(io.Discard, c.Conn, 1<<20)
}

var (
	_ ingest.RawWriter         = (*conn)(nil)
	_ ingest.NonBlockingWriter = (*conn)(nil)
)
