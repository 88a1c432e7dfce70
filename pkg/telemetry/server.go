package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerConfig configures the operations HTTP server.
type ServerConfig struct {
	Addr string `yaml:"addr"`
	// Pprof serves /debug/pprof: profiles show code paths and memory to
	// whoever reaches the port, and a profile costs CPU, so it is off
	// unless an operator asks for it.
	Pprof bool `yaml:"pprof"`
}

// RegisterFlags registers http.addr with the given default, and http.pprof.
func (c *ServerConfig) RegisterFlags(fs *flag.FlagSet, def string) {
	fs.StringVar(&c.Addr, "http.addr", def, "Address of the operations HTTP server (/healthz, /readyz, /metrics, and /debug/pprof with http.pprof); empty disables it.")
	fs.BoolVar(&c.Pprof, "http.pprof", false, "Serve /debug/pprof on the operations server (off by default: it exposes code paths and memory to whoever reaches the port).")
}

// Check reports whether one dependency is ready; a nil error means ready.
type Check func(ctx context.Context) error

// Server is the operations HTTP server. /readyz is ready when every
// registered check passes and the service has not started shutting down.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	metrics *Metrics

	mu       sync.Mutex
	checks   map[string]Check
	draining bool
	ln       net.Listener // guarded by mu: Addr may be called before Start returns
	srv      *http.Server
}

// NewServer returns a server; it does no I/O until Start.
func NewServer(cfg ServerConfig, m *Metrics, log *slog.Logger) *Server {
	return &Server{cfg: cfg, metrics: m, log: log.With("component", "http"), checks: map[string]Check{}}
}

// AddCheck registers a readiness check.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// SetDraining makes /readyz fail from now on, so load balancers stop sending
// new connections before the listeners close.
func (s *Server) SetDraining() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
}

// Handler returns the HTTP handler, for tests and embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", s.ready)
	if s.metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	}
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	return mux
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	draining := s.draining
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	if draining {
		http.Error(w, "not ready: shutting down", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var failed []string
	for name, c := range checks {
		if err := c(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
		}
	}
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, f := range failed {
			fmt.Fprintln(w, "not ready:", f)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

// Start binds the listener; Addr reports the bound address afterwards.
func (s *Server) Start() error {
	if s.cfg.Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("http.addr: listening on %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("operations server stopped", "err", err)
		}
	}()
	s.log.Info("operations server listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the bound address, or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops the server.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
