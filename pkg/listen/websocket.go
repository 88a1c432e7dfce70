package listen

import (
	"bufio"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// handshakeTimeout bounds a WebSocket handshake: the TLS handshake and the
// HTTP upgrade request (its headers). After the upgrade the establish
// function's CONNECT timeout takes over.
const handshakeTimeout = 10 * time.Second

// WebSocket is an MQTT-over-WebSocket listener: HTTP upgrade on any path
// ("/", "/mqtt", like mochi's listener), subprotocol "mqtt"
// [MQTT-6.0.0-4], binary messages only [MQTT-6.0.0-1]. Options: wss
// (WithTLS), the PROXY protocol in front of TLS and HTTP
// (WithProxyProtocol), and the browser Origins it accepts
// (WithAllowedOrigins).
//
// Origin policy: a handshake without an Origin header (a device, not a
// browser) is accepted. A browser's handshake is accepted only when its
// Origin is in the allowed list, or the list holds "*"; otherwise it gets
// HTTP 403 and no MQTT connection. So by default no web page can open MQTT
// connections with the browser's credentials.
type WebSocket struct {
	id       string
	addr     string
	o        options
	upgrader websocket.Upgrader

	mu        sync.Mutex
	ln        net.Listener // set by Init
	srv       *http.Server // set by Init
	log       *slog.Logger
	establish listeners.EstablishFn
	closed    bool
}

var _ listeners.Listener = (*WebSocket)(nil)

// NewWebSocket returns a listener for addr, identified by id. It opens
// nothing: Init does.
func NewWebSocket(id, addr string, opts ...Option) *WebSocket {
	l := &WebSocket{id: id, addr: addr, o: newOptions(opts), log: discardIfNil(nil)}
	origins := newOriginPolicy(l.o.origins, l.o.refused)
	l.upgrader = websocket.Upgrader{
		HandshakeTimeout: handshakeTimeout,
		Subprotocols:     []string{"mqtt"},
		CheckOrigin:      origins.allows,
		// An idle connection holds no write buffer, and a read buffer of
		// wsReadBufferSize rather than net/http's 4 KiB one: gorilla
		// takes over the reader the upgrade's Hijack returns when
		// ReadBufferSize is 0, and hijacker returns one of that size,
		// which the connection can look into (wsConn.br).
		WriteBufferPool: &sync.Pool{},
	}
	return l
}

// ID returns the listener's id.
func (l *WebSocket) ID() string { return l.id }

// Address returns the bound address once Init succeeded (the port chosen
// for ":0"), the configured one before.
func (l *WebSocket) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Protocol returns "wss" when the listener serves TLS, else "ws".
func (l *WebSocket) Protocol() string {
	if l.o.tls != nil {
		return "wss"
	}
	return "ws"
}

// Init binds the address, so that a port in use fails the start (mochi's
// listener binds in Serve and only logs the error).
func (l *WebSocket) Init(log *slog.Logger) error {
	log = discardIfNil(log).With("listener", l.id)
	ln, err := l.o.bind(l.addr, log)
	if err != nil {
		return err
	}
	if l.o.tls != nil {
		tc := l.o.tls.Clone()
		// WebSocket needs HTTP/1.1's upgrade; never negotiate h2.
		tc.NextProtos = []string{"http/1.1"}
		ln = &tlsListener{Listener: ln, tc: tc}
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: handshakeTimeout, // also bounds the TLS handshake
		IdleTimeout:       handshakeTimeout,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = ln.Close()
		return net.ErrClosed
	}
	l.ln, l.srv, l.log = ln, srv, log
	return nil
}

// Serve serves HTTP until Close; each upgraded connection is handed to
// establish on the goroutine of its HTTP request.
func (l *WebSocket) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	ln, srv, log := l.ln, l.srv, l.log
	l.mu.Unlock()
	if srv == nil {
		log.Error("serve called before a successful init")
		return
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.isClosed() {
		log.Error("serving websocket connections", "err", err)
	}
}

// wsReadBufferSize is the read buffer of each WebSocket connection (frames
// are read through it, a payload larger than it in several reads).
const wsReadBufferSize = 512

// handle upgrades a request and serves the connection on a goroutine of its
// own, started with a small stack: net/http's goroutine, whose stack its
// request grew (8.5 KiB per idle connection when the connection was served
// on it), ends with the handler; a hijacked connection is no longer
// net/http's.
func (l *WebSocket) handle(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	establish, log := l.establish, l.log
	l.mu.Unlock()
	hw := &hijacker{ResponseWriter: w}
	ws, err := l.upgrader.Upgrade(hw, r, nil) // answers a refused request itself (403, 400)
	if err != nil {
		log.Debug("websocket handshake refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	// The HTTP server's deadlines must not outlive the handshake; from
	// here on the establish function sets them.
	_ = ws.UnderlyingConn().SetDeadline(time.Time{})
	c := newWSConn(ws)
	c.br = hw.br
	if c.tn = hw.tlsSocket(); c.tn != nil {
		c.rc = c.tn.rc
	} else {
		c.rc = hw.socket()
	}
	go l.serve(establish, log, c, r.RemoteAddr)
}

// tlsListener makes each accepted connection the server side of a TLS
// connection as the TLS listener does (ServerTLS): over a socket that a
// quiet wss connection can wait on without a goroutine (wsConn.Read).
type tlsListener struct {
	net.Listener
	tc *tls.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return ServerTLS(c, l.tc), nil
}

// hijacker hands gorilla, at the upgrade, a reader of wsReadBufferSize
// over the hijacked connection in place of net/http's 4 KiB one (gorilla
// reuses the hijacked reader as its frame reader when it holds nothing
// and is over 256 bytes): the connection's read buffer is small, and the
// listener can see whether it holds a byte (wsConn.Read without waiting).
type hijacker struct {
	http.ResponseWriter
	conn net.Conn
	br   *bufio.Reader
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("websocket: the response cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return c, brw, err // gorilla refuses a client that sent data early
	}
	h.conn, h.br = c, bufio.NewReaderSize(c, wsReadBufferSize)
	return c, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// tlsSocket is the socket under the hijacked wss connection (nil for ws,
// or where sockets offer no raw access).
func (h *hijacker) tlsSocket() *nbConn {
	if tc, ok := h.conn.(*tls.Conn); ok {
		nb, _ := tc.NetConn().(*nbConn)
		return nb
	}
	return nil
}

// socket is the TCP socket of the hijacked connection when reads of the
// connection are reads of it: plain TCP, or a PROXY protocol connection
// whose reader returned the bytes read with the header (not TLS: wss
// connections buffer records above it, see tlsSocket).
func (h *hijacker) socket() syscall.RawConn {
	if !rawWrites || h.conn == nil {
		return nil
	}
	var sock *net.TCPConn
	switch c := h.conn.(type) {
	case *net.TCPConn:
		sock = c
	case *proxyConn:
		if !c.drained {
			return nil
		}
		sock, _ = c.Raw().(*net.TCPConn)
	}
	if sock == nil {
		return nil
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// serve serves one upgraded connection until it ends, then closes it.
func (l *WebSocket) serve(establish listeners.EstablishFn, log *slog.Logger, c *wsConn, remote string) {
	err := establish(l.id, c)
	if errors.Is(err, ErrDetached) {
		return // served on elsewhere (parked), and closed there
	}
	if err != nil {
		log.Debug("connection ended", "remote", remote, "err", err)
	}
	_ = c.Close()
}

func (l *WebSocket) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting and ends handshakes in progress; Serve returns.
// closeClients runs on the first call only. Upgraded connections are
// mochi's to close. Close is idempotent.
func (l *WebSocket) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	ln, srv := l.ln, l.srv
	l.mu.Unlock()
	if srv != nil {
		_ = srv.Close() // closes ln if Serve runs, and the connections not upgraded yet
	}
	if ln != nil {
		_ = ln.Close() // if Serve never ran
	}
	if first && closeClients != nil {
		closeClients(l.id)
	}
}
