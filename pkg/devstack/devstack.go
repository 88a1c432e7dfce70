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
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/archiver"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/dispatch"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Config is the dev stack configuration: the embedded Kafka, a full
// frontend configuration and the archive the archiver writes to.
type Config struct {
	Dev DevConfig `yaml:"dev"`
	// Archive is the archiver's MongoDB; without archive.mongodb-uri no
	// archiver runs.
	Archive  archive.Config  `yaml:"archive"`
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
	// ArchiverHTTPAddr is the archiver's operations server, apart from the
	// frontend's (http.addr) as in production.
	ArchiverHTTPAddr string `yaml:"archiver_http_addr"`
}

// mongoExample is the URI the startup message suggests: a MongoDB on this
// machine's default port.
const mongoExample = "mongodb://127.0.0.1:27017"

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
	fs.StringVar(&c.Dev.ArchiverHTTPAddr, "dev.archiver-http-addr", ":9466", "Address of the archiver's operations server (/metrics, /healthz, /readyz) when archive.mongodb-uri runs one; empty disables it.")
	c.Archive.RegisterFlags(fs)
	// The archiver's own help says it requires the URI; here it is optional.
	fs.Lookup("archive.mongodb-uri").Usage = "MongoDB connection string (mongodb:// or mongodb+srv://); when set, the stack runs an archiver writing every record to it, e.g. " + mongoExample + ". Empty runs none."
	c.Frontend.RegisterFlags(fs)
	_ = fs.Set("mqtt.ws-addr", ":8083")
	_ = fs.Set("kafka.partitions", "4")
	_ = fs.Set("node.id", "dev")
	_ = fs.Set("kafka.brokers", c.Dev.KafkaAddr)
	// A laptop stack for trying things out: anyone may connect, and the
	// banner says so. Production frontends refuse to start like this.
	_ = fs.Set("auth.allow-anonymous", "true")
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
		if c.Archive.Enabled() {
			errs = append(errs, c.Archive.Validate())
			if a := c.Dev.ArchiverHTTPAddr; a != "" {
				if _, port, err := net.SplitHostPort(a); err != nil {
					errs = append(errs, fmt.Errorf("dev.archiver-http-addr: %w", err))
				} else if a == c.Frontend.HTTP.Addr && port != "0" {
					errs = append(errs, fmt.Errorf("dev.archiver-http-addr: %s is the frontend's http.addr already", a))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Stack is a running dev stack.
type Stack struct {
	cfg     Config
	log     *slog.Logger
	out     io.Writer
	cluster *kfake.Cluster
	redis   *devRedis
	started chan struct{}
	// Frontend is set once Started is closed.
	Frontend *frontend.Server
	// Archiver is set once Started is closed, when archive.mongodb-uri is.
	Archiver *archiver.Service
}

// New builds the stack; it does no I/O.
func New(cfg Config, log *slog.Logger, out io.Writer) *Stack {
	return &Stack{cfg: cfg, log: log, out: out, started: make(chan struct{})}
}

// Started is closed once the frontend accepts connections and the startup
// message is written; Frontend and Archiver may be read after it.
func (s *Stack) Started() <-chan struct{} { return s.started }

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

	// The archiver has metrics of its own: its operations server serves what
	// a production archiver's would.
	atel, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	if s.cfg.Dev.Dispatcher {
		dcfg := s.dispatcherConfig(fcfg)
		g.Go(func() error { return dispatch.NewService(dcfg, s.log, tel).Run(gctx) })
	}
	if s.cfg.Archive.Enabled() {
		arch := archiver.NewService(s.archiverConfig(fcfg), s.log, atel)
		s.Archiver = arch
		g.Go(func() error { return arch.Run(gctx) })
	} else {
		s.log.Info("archiver off: set -archive.mongodb-uri (FLEETGATE_ARCHIVE_MONGODB_URI) to archive every record to MongoDB",
			"example", "-archive.mongodb-uri="+mongoExample)
	}
	g.Go(func() error { return fe.Run(gctx) })
	select {
	case <-fe.Started():
		s.waitArchiverOps(gctx)
		s.banner(fcfg)
		close(s.started)
	case <-gctx.Done():
	}
	return g.Wait()
}

// waitArchiverOps waits until the archiver's operations server is bound, so
// the startup message shows its address; the archiver binds it first thing
// in Run, or fails and ends ctx.
func (s *Stack) waitArchiverOps(ctx context.Context) {
	if s.Archiver == nil || s.cfg.Dev.ArchiverHTTPAddr == "" {
		return
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.Archiver.OpsAddr() == "" {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dispatcherConfig is the dispatcher's default configuration pointed at the
// stack's Kafka and Redis. It shares the frontend's metrics endpoint.
func (s *Stack) dispatcherConfig(f frontend.Config) dispatch.ServiceConfig {
	var d dispatch.ServiceConfig
	d.RegisterFlags(flag.NewFlagSet("dispatcher", flag.PanicOnError))
	d.Kafka = f.Kafka
	d.Kafka.ClientID = "fleetgate-dispatcher"
	d.Session = f.Session
	d.Subscriptions = f.Subscriptions.Config
	d.Log = f.Log
	d.GC = f.GC
	d.HTTP.Addr = ""
	return d
}

// archiverConfig is the archiver's default configuration with the stack's
// archive settings, pointed at the stack's Kafka and the frontend's topics
// (inbound, events and subscription change log), with its operations server
// on dev.archiver-http-addr.
func (s *Stack) archiverConfig(f frontend.Config) archiver.ServiceConfig {
	var a archiver.ServiceConfig
	a.RegisterFlags(flag.NewFlagSet("archiver", flag.PanicOnError))
	a.Archive = s.cfg.Archive
	a.Kafka = f.Kafka
	a.Kafka.ClientID = "fleetgate-archiver"
	a.Events = f.Events
	a.Subscriptions = f.Subscriptions.Config
	a.Log = f.Log
	a.GC = f.GC
	a.HTTP.Addr = s.cfg.Dev.ArchiverHTTPAddr
	return a
}

func (s *Stack) banner(f frontend.Config) {
	fe := s.Frontend
	fmt.Fprintf(s.out, `
fleetgate dev stack is up
  Kafka (embedded, kfake)   %s   topic %s   data in %s
  Redis                     %s   (%s)
  Dispatcher                %s
  Archiver                  %s
  MQTT over TCP             %s
  MQTT over WebSocket       %s
  metrics / health          http://%s/metrics  /healthz  /readyz
%s  Access                    %s
Try it:
  mosquitto_sub -h 127.0.0.1 -p %s%s -q 1 -i dev-app -c -t 'sensors/#' -v
  mosquitto_pub -h 127.0.0.1 -p %s%s -q 1 -i dev-device -t sensors/1/temp -m 21.5
  kcat -b %s -C -t %s -f 'key=%%k headers=%%h value=%%s\n'
%s
Ctrl-C drains and stops.
`, s.KafkaAddr(), f.Kafka.Topic, filepath.Join(s.cfg.Dev.DataDir, "kafka"), s.redis.Addr, s.redis.Kind, onOff(s.cfg.Dev.Dispatcher),
		s.archiverState(), orOff(fe.Addr(frontend.ListenerTCP)), orOff(fe.Addr(frontend.ListenerWS)), fe.OpsAddr(), s.archiverOps(), accessState(f),
		portOf(fe.Addr(frontend.ListenerTCP)), credentials(f), portOf(fe.Addr(frontend.ListenerTCP)), credentials(f), s.KafkaAddr(), f.Kafka.Topic, s.archiverTry())
}

// credentials are the mosquitto client flags the Try-it lines need: none
// while anonymous clients are let in.
func credentials(f frontend.Config) string {
	if f.Auth.AllowAnonymous {
		return ""
	}
	return " -u <user> -P <password>"
}

// accessState is the Access line of the startup message.
func accessState(f frontend.Config) string {
	who := "anonymous clients accepted (auth.allow-anonymous=true: a dev default; production frontends refuse to start without an authenticator)"
	if !f.Auth.AllowAnonymous {
		who = "authenticated clients only (" + strings.Join(f.Auth.Methods, ", ") + ")"
	} else if len(f.Auth.Methods) > 0 {
		who = "anonymous clients accepted besides " + strings.Join(f.Auth.Methods, ", ") + " (auth.allow-anonymous=true)"
	}
	what := "every topic (no authz.rules-file)"
	if f.Authz.RulesFile != "" {
		what = "as " + f.Authz.RulesFile + " allows"
	}
	return who + "; " + what
}

// archiverState is the Archiver line of the startup message. It shows
// MongoDB's hosts only: the URI may hold a password.
func (s *Stack) archiverState() string {
	if s.Archiver == nil {
		return "off (run one with -archive.mongodb-uri=" + mongoExample + ")"
	}
	return fmt.Sprintf("on (consumer group %s)   %s database %s", s.cfg.Archive.Group, mongoHosts(string(s.cfg.Archive.MongoURI)), s.cfg.Archive.Database)
}

// archiverOps is the line of the archiver's operations server, if it has one.
func (s *Stack) archiverOps() string {
	if s.Archiver == nil || s.Archiver.OpsAddr() == "" {
		return ""
	}
	return fmt.Sprintf("  archiver metrics / health http://%s/metrics  /healthz  /readyz\n", s.Archiver.OpsAddr())
}

// archiverTry shows how to look at the archive, if there is one.
func (s *Stack) archiverTry() string {
	if s.Archiver == nil {
		return ""
	}
	return fmt.Sprintf("  mongosh --quiet %s/%s --eval 'db.%s.find().sort({created: -1}).limit(1)'\n",
		mongoHosts(string(s.cfg.Archive.MongoURI)), s.cfg.Archive.Database, s.cfg.Archive.Collection)
}

// mongoHosts is a MongoDB connection string reduced to its scheme and hosts:
// no credentials (which a banner or log must not show), database or options.
func mongoHosts(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return "(not a mongodb:// URI)"
	}
	// The user information ends at the last @ before the options; a
	// password has its own @, / and ? percent-encoded.
	q := strings.IndexByte(rest, '?')
	if q < 0 {
		q = len(rest)
	}
	if at := strings.LastIndexByte(rest[:q], '@'); at >= 0 {
		rest = rest[at+1:]
	}
	if end := strings.IndexAny(rest, "/?"); end >= 0 {
		rest = rest[:end]
	}
	return scheme + "://" + rest
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
