// Package devstack runs fleetgate on one machine with nothing installed: an
// embedded Kafka-protocol cluster (franz-go's kfake, persisted to a data
// directory) and the frontend in one process. It is for trying fleetgate and
// for tests; production uses real Kafka (see docker-compose.yml and deploy/).
package devstack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/dispatch"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Config is the dev stack configuration: the embedded Kafka plus a full
// frontend configuration.
type Config struct {
	Dev      DevConfig       `yaml:"dev"`
	Frontend frontend.Config `yaml:",inline"`
}

// DevConfig configures the embedded pieces.
type DevConfig struct {
	DataDir     string `yaml:"data_dir"`
	KafkaAddr   string `yaml:"kafka_addr"`
	KafkaOnly   bool   `yaml:"kafka_only"`
	RedisAddr   string `yaml:"redis_addr"`
	RedisListen string `yaml:"redis_listen"`
	SyncWrites  bool   `yaml:"sync_writes"`
	Dispatcher  bool   `yaml:"dispatcher"`
}

// RegisterFlags registers the dev.* flags and every frontend flag, with dev
// defaults (WebSocket on, Kafka partitions fitting one machine).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Dev.DataDir, "dev.data-dir", ".fleetgate-data", "Directory of the embedded Kafka's log; messages survive a restart.")
	fs.StringVar(&c.Dev.KafkaAddr, "dev.kafka-addr", "127.0.0.1:9092", "Address of the embedded Kafka-protocol broker; ordinary Kafka clients (kcat) connect here. The frontend always uses it.")
	fs.BoolVar(&c.Dev.KafkaOnly, "dev.kafka-only", false, "Run only the embedded Kafka broker (for multi-process tests).")
	fs.StringVar(&c.Dev.RedisAddr, "dev.redis-addr", "", "Use this external Redis (host:port) instead of starting one.")
	fs.StringVar(&c.Dev.RedisListen, "dev.redis-listen", "127.0.0.1:6379", "Address of the Redis the dev stack starts: redis-server from PATH (persisted in dev.data-dir) when installed, else an in-memory one. Sessions, subscriptions, queues and retained messages live there.")
	fs.BoolVar(&c.Dev.Dispatcher, "dev.dispatcher", true, "Run a dispatcher in the stack (routes records to the session queues in Redis).")
	fs.BoolVar(&c.Dev.SyncWrites, "dev.sync-writes", false, "fsync every Kafka write (survives power loss, slower); without it data survives process crashes and restarts.")
	c.Frontend.RegisterFlags(fs)
	_ = fs.Set("mqtt.ws-addr", ":8083")
	_ = fs.Set("kafka.partitions", "4")
	_ = fs.Set("node.id", "dev")
	_ = fs.Set("kafka.brokers", c.Dev.KafkaAddr)
	if err := fs.Set("shutdown.timeout", "10s"); err != nil {
		panic(err)
	}
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Dev.DataDir == "" {
		errs = append(errs, errors.New("dev.data-dir: must not be empty"))
	}
	if _, _, err := net.SplitHostPort(c.Dev.KafkaAddr); err != nil {
		errs = append(errs, fmt.Errorf("dev.kafka-addr: %w", err))
	}
	c.Frontend.Kafka.Brokers = config.StringList{c.Dev.KafkaAddr}
	if !c.Dev.KafkaOnly {
		errs = append(errs, c.Frontend.Validate())
		if _, _, err := net.SplitHostPort(c.Dev.RedisListen); err != nil && c.Dev.RedisAddr == "" {
			errs = append(errs, fmt.Errorf("dev.redis-listen: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Stack is a running dev stack.
type Stack struct {
	cfg      Config
	log      *slog.Logger
	out      io.Writer
	cluster  *kfake.Cluster
	redis    *devRedis
	Frontend *frontend.Server
}

// New builds the stack; it does no I/O.
func New(cfg Config, log *slog.Logger, out io.Writer) *Stack {
	return &Stack{cfg: cfg, log: log, out: out}
}

// KafkaAddr returns the embedded broker's address once started.
func (s *Stack) KafkaAddr() string {
	if s.cluster == nil {
		return ""
	}
	return s.cluster.ListenAddrs()[0]
}

// Run starts everything, prints how to connect, and runs until ctx ends.
func (s *Stack) Run(ctx context.Context) error {
	dir := filepath.Join(s.cfg.Dev.DataDir, "kafka")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dev.data-dir: %w", err)
	}
	_, port, _ := net.SplitHostPort(s.cfg.Dev.KafkaAddr)
	var portN int
	fmt.Sscanf(port, "%d", &portN)
	host, _, _ := net.SplitHostPort(s.cfg.Dev.KafkaAddr)
	opts := []kfake.Opt{
		kfake.Ports(portN),
		kfake.DataDir(dir),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, port))
		}),
		kfake.DefaultNumPartitions(int(s.cfg.Frontend.Kafka.Partitions)),
		kfake.AllowAutoTopicCreation(),
	}
	if s.cfg.Dev.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("starting embedded kafka on %s (dev.kafka-addr): %w", s.cfg.Dev.KafkaAddr, err)
	}
	s.cluster = cluster
	defer cluster.Close()
	s.log.Info("embedded kafka started", "addr", s.KafkaAddr(), "data_dir", dir)

	if s.cfg.Dev.KafkaOnly {
		fmt.Fprintf(s.out, "fleetgate dev: embedded Kafka on %s (data in %s). Ctrl-C stops it.\n", s.KafkaAddr(), dir)
		<-ctx.Done()
		return nil
	}

	rds, err := startRedis(ctx, s.cfg.Dev.RedisAddr, s.cfg.Dev.RedisListen, s.cfg.Dev.DataDir)
	if err != nil {
		return err
	}
	s.redis = rds
	defer rds.close()
	s.log.Info("redis ready", "addr", rds.Addr, "kind", rds.Kind)

	tel, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	fcfg := s.cfg.Frontend
	fcfg.Kafka.Brokers = config.StringList{s.KafkaAddr()}
	fcfg.Session.Redis.Addrs = config.StringList{s.redis.Addr}
	fcfg.Subscriptions.Partitions = fcfg.Kafka.Partitions
	var feOpts []frontend.Option
	if fcfg.Tracing.OTLPEndpoint != "" {
		tp, stopTracing, err := telemetry.NewTracerProvider(ctx, fcfg.Tracing, "fleetgate-dev")
		if err != nil {
			return err
		}
		defer func() { _ = stopTracing(context.Background()) }()
		feOpts = append(feOpts, frontend.WithTracerProvider(tp))
	}
	fe, err := frontend.New(fcfg, s.log, tel, feOpts...)
	if err != nil {
		return err
	}
	s.Frontend = fe

	g, gctx := errgroup.WithContext(ctx)
	if s.cfg.Dev.Dispatcher {
		dcfg := s.dispatcherConfig(fcfg)
		g.Go(func() error { return dispatch.NewService(dcfg, s.log, tel).Run(gctx) })
	}
	g.Go(func() error { return fe.Run(gctx) })
	select {
	case <-fe.Started():
		s.banner(fcfg)
	case <-gctx.Done():
	}
	return g.Wait()
}

// dispatcherConfig is the dispatcher's default configuration pointed at the
// stack's Kafka and Redis. It shares the frontend's metrics endpoint.
func (s *Stack) dispatcherConfig(f frontend.Config) dispatch.ServiceConfig {
	var d dispatch.ServiceConfig
	d.RegisterFlags(flag.NewFlagSet("dispatcher", flag.PanicOnError))
	d.Kafka = f.Kafka
	d.Kafka.ClientID = "fleetgate-dispatcher"
	d.Session = f.Session
	d.Subscriptions = f.Subscriptions
	d.Log = f.Log
	d.HTTP.Addr = ""
	// A new group in the dev stack routes what is already in the topic,
	// so nothing published while it joins is skipped; after that its
	// committed offsets apply.
	d.Dispatch.StartAt = "start"
	return d
}

func (s *Stack) banner(f frontend.Config) {
	fe := s.Frontend
	fmt.Fprintf(s.out, `
fleetgate dev stack is up
  Kafka (embedded, kfake)   %s   topic %s   data in %s
  Redis                     %s   (%s)
  Dispatcher                %s
  MQTT over TCP             %s
  MQTT over WebSocket       %s
  metrics / health          http://%s/metrics  /healthz  /readyz

Try it:
  mosquitto_sub -h 127.0.0.1 -p %s -q 1 -i dev-app -c -t 'sensors/#' -v
  mosquitto_pub -h 127.0.0.1 -p %s -q 1 -i dev-device -t sensors/1/temp -m 21.5
  kcat -b %s -C -t %s -f 'key=%%k headers=%%h value=%%s\n'

Not there yet: the archiver (MongoDB, issue #4).
Ctrl-C drains and stops.
`, s.KafkaAddr(), f.Kafka.Topic, filepath.Join(s.cfg.Dev.DataDir, "kafka"), s.redis.Addr, s.redis.Kind, onOff(s.cfg.Dev.Dispatcher),
		orOff(fe.Addr(frontend.ListenerTCP)), orOff(fe.Addr(frontend.ListenerWS)), fe.OpsAddr(),
		portOf(fe.Addr(frontend.ListenerTCP)), portOf(fe.Addr(frontend.ListenerTCP)), s.KafkaAddr(), f.Kafka.Topic)
}

func onOff(b bool) string {
	if b {
		return "on (consumer group fleetgate-dispatcher)"
	}
	return "off"
}

func orOff(a string) string {
	if a == "" {
		return "off"
	}
	return a
}

func portOf(a string) string {
	_, p, err := net.SplitHostPort(a)
	if err != nil {
		return "1883"
	}
	return p
}
