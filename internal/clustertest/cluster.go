//go:build unix

package clustertest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/archiver"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/dispatch"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Options shape a cluster.
type Options struct {
	// Frontends and Dispatchers default to 1.
	Frontends, Dispatchers int
	// Frontend adjusts each frontend's configuration (i is its index).
	Frontend func(i int, c *frontend.Config)
	// Dispatcher adjusts each dispatcher's configuration.
	Dispatcher func(i int, c *dispatch.ServiceConfig)
	// ArchiveURI, when set, runs an archiver writing to the MongoDB there;
	// Archiver adjusts its configuration (database, intervals).
	ArchiveURI string
	Archiver   func(c *archiver.ServiceConfig)
	// Access, when set, makes the frontends demand its credentials (JWT)
	// as the product does; otherwise they let anonymous clients in
	// (auth.allow-anonymous=true).
	Access *Access
}

// Cluster is a running cluster.
type Cluster struct {
	t         testing.TB
	Kafka     *testkit.Kafka
	RedisAddr string
	Frontends []*Frontend
	Redis     *redis.Client
}

// Frontend is one frontend of the cluster.
type Frontend struct {
	Server *frontend.Server
	Config frontend.Config
	// Addr is its MQTT over TCP address.
	Addr string
	stop context.CancelFunc
	done chan error
	once sync.Once
	err  error // Run's result, once stopped
	// checked is set when the test stopped the frontend itself and so
	// judges the result; otherwise the cleanup requires a clean stop.
	checked atomic.Bool
}

// Stop drains the frontend and returns Run's result: nil after a clean
// drain, an error after an unclean one or when it did not stop in 30 s.
// The caller judges the result (a test may expect an unclean stop).
func (f *Frontend) Stop() error {
	f.checked.Store(true)
	return f.stopOnce()
}

func (f *Frontend) stopOnce() error {
	f.once.Do(func() {
		f.stop()
		select {
		case f.err = <-f.done:
		case <-time.After(30 * time.Second):
			f.err = errors.New("frontend did not stop within 30s")
		}
	})
	return f.err
}

// Start starts a cluster against the redis-server at redisAddr, whose data
// it deletes first, and waits until every process is ready.
func Start(t testing.TB, redisAddr string, o Options) *Cluster {
	t.Helper()
	if o.Frontends == 0 {
		o.Frontends = 1
	}
	if o.Dispatchers == 0 {
		o.Dispatchers = 1
	}
	c := &Cluster{t: t, Kafka: testkit.StartKafka(t), RedisAddr: redisAddr}
	c.Redis = redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = c.Redis.Close() })
	require.NoError(t, c.Redis.FlushAll(context.Background()).Err())

	log := Logger(t)
	var ops []string
	for i := range o.Dispatchers {
		var cfg dispatch.ServiceConfig
		cfg.RegisterFlags(flag.NewFlagSet("dispatcher", flag.PanicOnError))
		cfg.Kafka.Brokers = config.StringList{c.Kafka.Addr()}
		cfg.Session.Redis.Addrs = config.StringList{redisAddr}
		cfg.HTTP.Addr = "127.0.0.1:0"
		if o.Dispatcher != nil {
			o.Dispatcher(i, &cfg)
		}
		require.NoError(t, cfg.Validate())
		tel, err := telemetry.NewMetrics()
		require.NoError(t, err)
		svc := dispatch.NewService(cfg, log.With("dispatcher", i), tel)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err, "dispatcher %d stopped uncleanly", i)
			case <-time.After(30 * time.Second):
				t.Error("dispatcher did not stop")
			}
		})
		require.Eventually(t, func() bool { return svc.OpsAddr() != "" }, 10*time.Second, 10*time.Millisecond)
		ops = append(ops, svc.OpsAddr())
	}
	if o.ArchiveURI != "" {
		ops = append(ops, c.startArchiver(o, log))
	}
	for i := range o.Frontends {
		var cfg frontend.Config
		cfg.RegisterFlags(flag.NewFlagSet("frontend", flag.PanicOnError))
		cfg.Node.ID = fmt.Sprintf("fe-%d", i)
		cfg.MQTT.TCPAddr = "127.0.0.1:0"
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.Kafka.Brokers = config.StringList{c.Kafka.Addr()}
		cfg.Session.Redis.Addrs = config.StringList{redisAddr}
		cfg.Shutdown.Timeout = 5 * time.Second
		// Clusters in one process test MQTT and routing; authorization
		// is tested in pkg/frontend and test/cluster.
		if o.Access != nil {
			cfg.Auth.JWT.KeyFiles = config.StringList{o.Access.keyFile}
			// Every topic open on purpose: these clusters test MQTT,
			// not the rules (test/cluster attacks a cluster with them).
			cfg.Authz.AllowAll = true
		} else {
			cfg.Auth.AllowAnonymous = true
		}
		if o.Frontend != nil {
			o.Frontend(i, &cfg)
		}
		f := StartFrontend(t, cfg, log.With("frontend", i))
		ops = append(ops, f.Server.OpsAddr())
		c.Frontends = append(c.Frontends, f)
	}
	for _, a := range ops {
		require.Eventually(t, func() bool { return ready(a) }, 20*time.Second, 20*time.Millisecond, "process with ops %s never became ready", a)
	}
	return c
}

// startArchiver runs an archiver in the test process and returns its ops
// address.
// StartFrontend runs a frontend with cfg in the test process, waits until
// its listeners accept connections, and stops it at the end of the test,
// failing the test if it stops uncleanly. It is the one way tests start a
// frontend, alone (pkg/frontend) or in a cluster (Start).
func StartFrontend(t testing.TB, cfg frontend.Config, log *slog.Logger) *Frontend {
	t.Helper()
	require.NoError(t, cfg.Validate())
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	srv, err := frontend.New(cfg, log, tel)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	f := &Frontend{Server: srv, Config: cfg, stop: cancel, done: make(chan error, 1)}
	go func() { f.done <- srv.Run(ctx) }()
	select {
	case <-srv.Started():
	case err := <-f.done:
		t.Fatalf("frontend %s did not start: %v", cfg.Node.ID, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("frontend %s did not start in 10s", cfg.Node.ID)
	}
	f.Addr = srv.Addr(frontend.ListenerTCP)
	t.Cleanup(func() {
		if err := f.stopOnce(); !f.checked.Load() {
			assert.NoError(t, err, "frontend %s stopped uncleanly", cfg.Node.ID)
		}
	})
	return f
}

func (c *Cluster) startArchiver(o Options, log *slog.Logger) string {
	t := c.t
	var cfg archiver.ServiceConfig
	cfg.RegisterFlags(flag.NewFlagSet("archiver", flag.PanicOnError))
	cfg.Archive.MongoURI = config.URL(o.ArchiveURI)
	cfg.Archive.BatchInterval = 20 * time.Millisecond
	cfg.Archiver.LagInterval = 100 * time.Millisecond
	cfg.Kafka.Brokers = config.StringList{c.Kafka.Addr()}
	cfg.HTTP.Addr = "127.0.0.1:0"
	if o.Archiver != nil {
		o.Archiver(&cfg)
	}
	require.NoError(t, cfg.Validate())
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	svc := archiver.NewService(cfg, log.With("archiver", 0), tel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "archiver stopped uncleanly")
		case <-time.After(30 * time.Second):
			t.Error("archiver did not stop")
		}
	})
	require.Eventually(t, func() bool { return svc.OpsAddr() != "" }, 10*time.Second, 10*time.Millisecond)
	return svc.OpsAddr()
}

func ready(ops string) bool {
	resp, err := http.Get("http://" + ops + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// Addr is the MQTT address of frontend 0.
func (c *Cluster) Addr() string { return c.Frontends[0].Addr }

// Logger logs through t.Log at warn level (debug with FLEETGATE_TEST_DEBUG
// set) and stops when the test ends.
func Logger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("FLEETGATE_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	w := &tlog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

type tlog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p))
	}
	return len(p), nil
}
