package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// Errors of the client.
var (
	// ErrConnectRefused is returned when the broker answers CONNECT with a
	// failure reason code.
	ErrConnectRefused = errors.New("connect refused")
	// ErrUnexpectedPacket is returned when the broker answers CONNECT with
	// something other than CONNACK.
	ErrUnexpectedPacket = errors.New("unexpected packet")
)

// ClientOptions configure one connection.
type ClientOptions struct {
	// ClientID is the MQTT client identifier; it must be unique per
	// concurrent connection.
	ClientID string
	// Version is the MQTT protocol level: 4 (3.1.1) or 5.
	Version byte
	// Keepalive is announced in CONNECT; 0 switches keep-alive off.
	Keepalive time.Duration
	// Username and Password are sent when Username is not empty.
	Username, Password string
	// ConnectTimeout bounds dialling plus the CONNECT/CONNACK exchange.
	ConnectTimeout time.Duration
	// Persistent asks for a session that outlives the connection: clean
	// session off (3.1.1), or clean start off with SessionExpiry (5).
	Persistent bool
	// SessionExpiry is the Session Expiry Interval of a persistent MQTT 5
	// session.
	SessionExpiry time.Duration
	// TLS, when set, runs MQTT over TLS with it (a full handshake per
	// connection unless it has a ClientSessionCache).
	TLS *tls.Config
	// WebSocket, when set, runs MQTT over WebSocket to this path (over TLS
	// too when TLS is set): one binary message per flush.
	WebSocket string
}

// TLSResumed reports whether the connection is TLS and its handshake
// resumed an earlier session.
func (c *Client) TLSResumed() bool {
	return c.tls != nil && c.tls.ConnectionState().DidResume
}

// Client is one MQTT connection. Reads come from a single goroutine
// (ReadPacket); writes may come from several and are buffered until Flush.
type Client struct {
	conn    net.Conn
	tls     *tls.Conn // the TLS connection, under WebSocket or not; nil over plain TCP
	version byte

	br   *bufio.Reader
	rbuf []byte // reused body buffer of ReadPacket; only the reader uses it

	mu  sync.Mutex // guards bw and ebuf
	bw  *bufio.Writer
	enc bytes.Buffer

	// ServerReceiveMaximum is the Receive Maximum the broker announced in
	// CONNACK (MQTT 5), or 65535 when it announced none.
	ServerReceiveMaximum uint16
	// SessionPresent is the CONNACK flag.
	SessionPresent bool
	// ConnackLatency is the time from sending CONNECT to reading CONNACK:
	// what the broker took to admit the client, authentication included.
	ConnackLatency time.Duration
}

// RefusedError is a CONNACK with a failure reason code; it matches
// ErrConnectRefused.
type RefusedError struct {
	// Code is the CONNACK's return code (3.1.1) or reason code (5).
	Code byte
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: reason code 0x%02x", ErrConnectRefused, e.Code)
}

// Is makes errors.Is(err, ErrConnectRefused) hold.
func (e *RefusedError) Is(target error) bool { return target == ErrConnectRefused }

// Dial connects to addr, sends CONNECT (with a clean start unless
// opts.Persistent) and waits for a successful CONNACK.
func Dial(ctx context.Context, addr string, opts ClientOptions) (*Client, error) {
	if opts.Version != 4 && opts.Version != 5 {
		return nil, fmt.Errorf("mqtt version %d: must be 4 or 5", opts.Version)
	}
	timeout := opts.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	if src := sourceFor(addr); src != nil {
		d.LocalAddr, d.Control = src, bindAddressNoPort
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	if opts.TLS != nil {
		tc := tls.Client(conn, opts.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	tconn, _ := conn.(*tls.Conn)
	if opts.WebSocket != "" {
		ws, err := DialWebSocket(ctx, conn, addr, opts.WebSocket)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		conn = ws
	}
	c := &Client{
		conn:                 conn,
		tls:                  tconn,
		version:              opts.Version,
		br:                   bufio.NewReaderSize(conn, 4096),
		bw:                   bufio.NewWriterSize(conn, 16<<10),
		ServerReceiveMaximum: 65535,
	}
	if err := c.connect(ctx, opts); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connecting %s to %s: %w", opts.ClientID, addr, err)
	}
	return c, nil
}

func (c *Client) connect(ctx context.Context, opts ClientOptions) error {
	deadline, _ := ctx.Deadline()
	_ = c.conn.SetDeadline(deadline)
	defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Now()) })
	defer stop()

	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: opts.Version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: opts.ClientID,
			Keepalive:        uint16(min(opts.Keepalive/time.Second, 65535)),
			Clean:            !opts.Persistent,
		},
	}
	if opts.Persistent && opts.Version == 5 {
		pk.Properties.SessionExpiryInterval = uint32(min(opts.SessionExpiry/time.Second, 0xFFFFFFFE))
		pk.Properties.SessionExpiryIntervalFlag = true
	}
	if opts.Username != "" {
		pk.Connect.UsernameFlag = true
		pk.Connect.Username = []byte(opts.Username)
		if opts.Password != "" {
			pk.Connect.PasswordFlag = true
			pk.Connect.Password = []byte(opts.Password)
		}
	}
	if err := c.WritePacket(pk); err != nil {
		return err
	}
	sent := time.Now()
	if err := c.Flush(); err != nil {
		return err
	}
	ack, err := c.ReadPacket()
	if err != nil {
		return fmt.Errorf("reading connack: %w", err)
	}
	c.ConnackLatency = time.Since(sent)
	if ack.FixedHeader.Type != packets.Connack {
		return fmt.Errorf("%w: %s instead of connack", ErrUnexpectedPacket, packets.PacketNames[ack.FixedHeader.Type])
	}
	if ack.ReasonCode != 0 {
		return &RefusedError{Code: ack.ReasonCode}
	}
	c.SessionPresent = ack.SessionPresent
	if opts.Version == 5 && ack.Properties.ReceiveMaximum > 0 {
		c.ServerReceiveMaximum = ack.Properties.ReceiveMaximum
	}
	return nil
}

// Version returns the protocol level of the connection.
func (c *Client) Version() byte { return c.version }

// ReadPacket reads and decodes the next packet. Only one goroutine may call
// it; a PUBLISH's payload (not its topic) is valid until the next call.
func (c *Client) ReadPacket() (packets.Packet, error) {
	pk, buf, err := mqttwire.Read(c.br, c.version, c.rbuf)
	c.rbuf = buf
	return pk, err
}

// WritePacket encodes pk into the write buffer; Flush sends it.
func (c *Client) WritePacket(pk packets.Packet) error {
	pk.ProtocolVersion = c.version
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.Reset()
	if err := mqttwire.Encode(&c.enc, pk); err != nil {
		return err
	}
	_, err := c.bw.Write(c.enc.Bytes())
	return err
}

// writePublish buffers the pre-encoded PUBLISH t with packet id pid, without
// allocating: the hot path of the publish workload.
func (c *Client) writePublish(t *publishTemplate, pid uint16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.pidOffset < 0 {
		_, err := c.bw.Write(t.b)
		return err
	}
	_, _ = c.bw.Write(t.b[:t.pidOffset])
	_ = c.bw.WriteByte(byte(pid >> 8))
	_ = c.bw.WriteByte(byte(pid))
	_, err := c.bw.Write(t.b[t.pidOffset+2:])
	return err
}

// writeStampedPublish buffers the pre-encoded PUBLISH t with packet id pid
// and st written over the start of its payload: the hot path of the pub/sub
// workloads.
func (c *Client) writeStampedPublish(t *publishTemplate, pid uint16, st stamp) error {
	var sb [stampSize]byte
	st.put(sb[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	rest := t.payloadOffset
	if t.pidOffset >= 0 {
		_, _ = c.bw.Write(t.b[:t.pidOffset])
		_ = c.bw.WriteByte(byte(pid >> 8))
		_ = c.bw.WriteByte(byte(pid))
		_, _ = c.bw.Write(t.b[t.pidOffset+2 : t.payloadOffset])
	} else {
		_, _ = c.bw.Write(t.b[:t.payloadOffset])
	}
	rest += stampSize
	_, _ = c.bw.Write(sb[:])
	_, err := c.bw.Write(t.b[rest:])
	return err
}

// writePuback buffers a PUBACK for pid. Both protocol levels accept the
// 2-byte form: MQTT 5 omits a success reason code and empty properties
// (MQTT 5 section 3.4.2.1).
func (c *Client) writePuback(pid uint16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.bw.Write([]byte{packets.Puback << 4, 2, byte(pid >> 8), byte(pid)})
	return err
}

// Flush sends everything buffered.
func (c *Client) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bw.Flush()
}

// Buffered reports whether a read would return without waiting on the
// network: the reader uses it to batch its answers (PUBREL) into one flush.
func (c *Client) Buffered() bool { return c.br.Buffered() > 0 }

// Ping sends PINGREQ (flushed).
func (c *Client) Ping() error {
	if err := c.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}); err != nil {
		return err
	}
	return c.Flush()
}

// SetReadDeadline sets the read deadline of the socket.
func (c *Client) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// Disconnect sends DISCONNECT (normal disconnection) and closes the socket.
func (c *Client) Disconnect() error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	err := c.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	if err == nil {
		err = c.Flush()
	}
	if cerr := c.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the socket without DISCONNECT.
func (c *Client) Close() error { return c.conn.Close() }

// errNotWebSocket is PingWebSocket's error on a connection that is not
// MQTT over WebSocket.
var errNotWebSocket = errors.New("not a WebSocket connection")

// PingWebSocket sends a WebSocket ping, as some WebSocket libraries do on
// their own between a client's messages; the pong is taken by the next
// read.
func (c *Client) PingWebSocket() error {
	ws, ok := c.conn.(*wsConn)
	if !ok {
		return errNotWebSocket
	}
	return ws.ping()
}

// WebSocketPongs is how many WebSocket pongs the connection's reads took
// so far (0 when it is not MQTT over WebSocket).
func (c *Client) WebSocketPongs() int64 {
	if ws, ok := c.conn.(*wsConn); ok {
		return ws.pongs.Load()
	}
	return 0
}

// publishTemplate is a PUBLISH encoded once, whose packet id is patched in
// for every send.
type publishTemplate struct {
	b             []byte
	pidOffset     int // offset of the two packet id bytes; -1 for QoS 0
	payloadOffset int // offset of the payload, which ends the packet
}

// newPublishTemplate encodes a PUBLISH of payload to topic.
func newPublishTemplate(version, qos byte, topic string, payload []byte) (*publishTemplate, error) {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos},
		ProtocolVersion: version,
		TopicName:       topic,
		Payload:         payload,
	}
	if qos > 0 {
		pk.PacketID = 1
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		return nil, fmt.Errorf("encoding publish template: %w", err)
	}
	t := &publishTemplate{b: buf.Bytes(), pidOffset: -1, payloadOffset: buf.Len() - len(payload)}
	if qos > 0 {
		header := len(t.b) - pk.FixedHeader.Remaining
		t.pidOffset = header + 2 + len(topic)
	}
	return t, nil
}
