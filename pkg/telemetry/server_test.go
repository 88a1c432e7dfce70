package telemetry

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// newTestMetrics returns Metrics that are shut down when the test ends.
func newTestMetrics(t *testing.T) *Metrics {
	t.Helper()
	m, err := NewMetrics()
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Provider.Shutdown(context.Background()) })
	return m
}

// get serves one request to h and returns the status code and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func pass(context.Context) error { return nil }

func failWith(err error) Check { return func(context.Context) error { return err } }

func TestHealthz(t *testing.T) {
	s := NewServer(ServerConfig{}, nil, testkit.DiscardLogger())
	s.AddCheck("kafka", failWith(errors.New("down")))
	s.SetDraining()

	code, body := get(t, s.Handler(), "/healthz")
	assert.Equal(t, http.StatusOK, code, "liveness does not depend on checks or draining")
	assert.Equal(t, "ok\n", body)
}

func TestReadyz(t *testing.T) {
	for _, tc := range []struct {
		name         string
		checks       map[string]Check
		draining     bool
		wantCode     int
		wantBody     []string
		wantNotInBdy []string
	}{
		{
			name:     "a server without checks is ready",
			wantCode: http.StatusOK,
			wantBody: []string{"ready"},
		},
		{
			name:     "a server whose checks all pass is ready",
			checks:   map[string]Check{"kafka": pass, "redis": pass},
			wantCode: http.StatusOK,
			wantBody: []string{"ready"},
		},
		{
			name:         "a failing check makes the server not ready and is named with its error",
			checks:       map[string]Check{"kafka": failWith(errors.New("no brokers reachable")), "redis": pass},
			wantCode:     http.StatusServiceUnavailable,
			wantBody:     []string{"not ready", "kafka: no brokers reachable"},
			wantNotInBdy: []string{"redis"},
		},
		{
			name: "every failing check is listed",
			checks: map[string]Check{
				"kafka": failWith(errors.New("no brokers reachable")),
				"redis": failWith(errors.New("connection refused")),
			},
			wantCode: http.StatusServiceUnavailable,
			wantBody: []string{"kafka: no brokers reachable", "redis: connection refused"},
		},
		{
			name:     "a draining server is not ready even when its checks pass",
			checks:   map[string]Check{"kafka": pass},
			draining: true,
			wantCode: http.StatusServiceUnavailable,
			wantBody: []string{"shutting down"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(ServerConfig{}, nil, testkit.DiscardLogger())
			for name, c := range tc.checks {
				s.AddCheck(name, c)
			}
			if tc.draining {
				s.SetDraining()
			}
			code, body := get(t, s.Handler(), "/readyz")
			assert.Equal(t, tc.wantCode, code)
			for _, want := range tc.wantBody {
				assert.Contains(t, body, want)
			}
			for _, notWant := range tc.wantNotInBdy {
				assert.NotContains(t, body, notWant)
			}
		})
	}
}

func TestReadyzFollowsChecksAndDraining(t *testing.T) {
	s := NewServer(ServerConfig{}, nil, testkit.DiscardLogger())
	var kafkaErr error
	s.AddCheck("kafka", func(context.Context) error { return kafkaErr })
	h := s.Handler()

	code, _ := get(t, h, "/readyz")
	assert.Equal(t, http.StatusOK, code, "ready while the check passes")

	kafkaErr = errors.New("no brokers reachable")
	code, body := get(t, h, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "not ready once the check fails")
	assert.Contains(t, body, "kafka: no brokers reachable")

	kafkaErr = nil
	code, _ = get(t, h, "/readyz")
	assert.Equal(t, http.StatusOK, code, "ready again once the check recovers")

	s.SetDraining()
	code, _ = get(t, h, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "not ready after SetDraining")
}

func TestReadyzPassesRequestContextToChecks(t *testing.T) {
	s := NewServer(ServerConfig{}, nil, testkit.DiscardLogger())
	var hadDeadline bool
	s.AddCheck("kafka", func(ctx context.Context) error {
		_, hadDeadline = ctx.Deadline()
		return nil
	})
	code, _ := get(t, s.Handler(), "/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, hadDeadline, "checks run with a deadline so a hanging dependency cannot hang /readyz")
}

func TestMetricsEndpoint(t *testing.T) {
	m := newTestMetrics(t)
	meter := m.Provider.Meter("github.com/fleetgate/fleetgate/pkg/telemetry/test")
	counter, err := meter.Int64Counter("fleetgate_test_publishes", metric.WithDescription("Publishes seen by the test."))
	require.NoError(t, err)
	counter.Add(context.Background(), 3, metric.WithAttributes(attribute.String("outcome", "ok")))
	counter.Add(context.Background(), 1, metric.WithAttributes(attribute.String("outcome", "error")))

	s := NewServer(ServerConfig{}, m, testkit.DiscardLogger())
	code, body := get(t, s.Handler(), "/metrics")
	require.Equal(t, http.StatusOK, code)

	assert.Contains(t, body, "# TYPE fleetgate_test_publishes_total counter")
	assert.Contains(t, body, "# HELP fleetgate_test_publishes_total Publishes seen by the test.")
	assert.Contains(t, body, `fleetgate_test_publishes_total{outcome="ok"} 3`)
	assert.Contains(t, body, `fleetgate_test_publishes_total{outcome="error"} 1`)
	assert.Contains(t, body, "go_goroutines", "the Go runtime collector is registered")
	assert.NotContains(t, body, "otel_scope_info", "scope info is switched off")
}

func TestMetricsEndpointWithoutMetrics(t *testing.T) {
	s := NewServer(ServerConfig{}, nil, testkit.DiscardLogger())
	code, _ := get(t, s.Handler(), "/metrics")
	assert.Equal(t, http.StatusNotFound, code)
}

func TestPprofIsServedOnlyWhenAskedFor(t *testing.T) {
	var cfg ServerConfig
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.RegisterFlags(fs, ":0")
	require.NoError(t, fs.Parse(nil))
	code, _ := get(t, NewServer(cfg, nil, testkit.DiscardLogger()).Handler(), "/debug/pprof/")
	assert.Equal(t, http.StatusNotFound, code, "off by default")

	require.NoError(t, fs.Parse([]string{"-http.pprof"}))
	code, body := get(t, NewServer(cfg, nil, testkit.DiscardLogger()).Handler(), "/debug/pprof/")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "goroutine")
}

func TestServerStartAndClose(t *testing.T) {
	m := newTestMetrics(t)
	s := NewServer(ServerConfig{Addr: "127.0.0.1:0"}, m, testkit.DiscardLogger())
	assert.Empty(t, s.Addr(), "no address before Start")
	require.NoError(t, s.Start())
	t.Cleanup(func() { _ = s.Close() })
	require.NotEmpty(t, s.Addr())
	assert.NotEqual(t, "127.0.0.1:0", s.Addr(), "Addr reports the bound port")

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + s.Addr() + path)
		require.NoError(t, err, path)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}

	require.NoError(t, s.Close())
	_, err := http.Get("http://" + s.Addr() + "/healthz")
	assert.Error(t, err, "the listener is closed after Close")
	assert.NoError(t, s.Close(), "Close is idempotent")
}

func TestServerStartErrors(t *testing.T) {
	first := NewServer(ServerConfig{Addr: "127.0.0.1:0"}, nil, testkit.DiscardLogger())
	require.NoError(t, first.Start())
	t.Cleanup(func() { _ = first.Close() })

	second := NewServer(ServerConfig{Addr: first.Addr()}, nil, testkit.DiscardLogger())
	err := second.Start()
	require.Error(t, err, "the address is taken")
	assert.Contains(t, err.Error(), "http.addr")
	assert.Contains(t, err.Error(), first.Addr())
}

func TestServerWithoutAddr(t *testing.T) {
	s := NewServer(ServerConfig{}, nil, testkit.DiscardLogger())
	require.NoError(t, s.Start(), "an empty address disables the server")
	assert.Empty(t, s.Addr())
	assert.NoError(t, s.Close())
}

func TestServerConfigRegisterFlags(t *testing.T) {
	var c ServerConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs, ":9090")
	assert.Equal(t, ":9090", c.Addr, "the default is written into the config")
	require.NoError(t, fs.Parse([]string{"-http.addr", "127.0.0.1:8080"}))
	assert.Equal(t, "127.0.0.1:8080", c.Addr)
}

func TestLogConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       LogConfig
		wantErrIn []string // substrings of the error; none means valid
		notIn     []string
	}{
		{name: "info and text are valid", cfg: LogConfig{Level: "info", Format: "text"}},
		{name: "debug and json are valid", cfg: LogConfig{Level: "debug", Format: "json"}},
		{name: "warn is valid", cfg: LogConfig{Level: "warn", Format: "text"}},
		{name: "error is valid", cfg: LogConfig{Level: "error", Format: "text"}},
		{name: "levels are case-insensitive", cfg: LogConfig{Level: "WARN", Format: "json"}},
		{name: "an unknown level names log.level", cfg: LogConfig{Level: "verbose", Format: "text"}, wantErrIn: []string{"log.level", `"verbose"`}, notIn: []string{"log.format"}},
		{name: "an empty level names log.level", cfg: LogConfig{Level: "", Format: "text"}, wantErrIn: []string{"log.level"}},
		{name: "an unknown format names log.format", cfg: LogConfig{Level: "info", Format: "xml"}, wantErrIn: []string{"log.format", `"xml"`}, notIn: []string{"log.level"}},
		{name: "formats are case-sensitive", cfg: LogConfig{Level: "info", Format: "JSON"}, wantErrIn: []string{"log.format"}},
		{name: "both bad fields are named", cfg: LogConfig{Level: "loud", Format: "xml"}, wantErrIn: []string{"log.level", "log.format"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.wantErrIn) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, s := range tc.wantErrIn {
				assert.Contains(t, err.Error(), s)
			}
			for _, s := range tc.notIn {
				assert.NotContains(t, err.Error(), s)
			}
		})
	}
}

func TestLogConfigRegisterFlags(t *testing.T) {
	var c LogConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	assert.Equal(t, LogConfig{Level: "info", Format: "text"}, c)
	require.NoError(t, c.Validate(), "the defaults are valid")
	require.NoError(t, fs.Parse([]string{"-log.level=debug", "-log.format=json"}))
	assert.Equal(t, LogConfig{Level: "debug", Format: "json"}, c)
}

func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        LogConfig
		wantPrefix string
		wantDebug  bool
	}{
		{name: "text logs are key=value lines", cfg: LogConfig{Level: "info", Format: "text"}, wantPrefix: "time="},
		{name: "json logs are JSON objects", cfg: LogConfig{Level: "info", Format: "json"}, wantPrefix: "{"},
		{name: "debug level logs debug records", cfg: LogConfig{Level: "debug", Format: "text"}, wantPrefix: "time=", wantDebug: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			log := NewLogger(tc.cfg, &buf)
			log.Debug("debug message")
			log.Info("info message", "client_id", "c1")
			out := buf.String()
			assert.True(t, strings.HasPrefix(out, tc.wantPrefix), out)
			assert.Contains(t, out, "info message")
			assert.Contains(t, out, "c1")
			if tc.wantDebug {
				assert.Contains(t, out, "debug message")
			} else {
				assert.NotContains(t, out, "debug message")
			}
		})
	}
}
