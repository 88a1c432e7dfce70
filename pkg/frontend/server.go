package frontend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/fleetgate/fleetgate/pkg/acl"
	"github.com/fleetgate/fleetgate/pkg/auth"
	"github.com/fleetgate/fleetgate/pkg/delivery"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/exactlyonce"
	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/ingest"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/listen"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/sessions"
	"github.com/fleetgate/fleetgate/pkg/subscribe"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
	"github.com/fleetgate/fleetgate/pkg/wills"
)

// ErrDrainTimeout is wrapped by Run's error when the drain at shutdown did
// not finish within shutdown.timeout.
var ErrDrainTimeout = errors.New("drain did not finish within shutdown.timeout")

// Listener ids, also the "listener" metric label.
const (
	ListenerTCP = "tcp"
	ListenerTLS = "tls"
	ListenerWS  = "ws"
)

// Server is one frontend node.
type Server struct {
	cfg     Config
	log     *slog.Logger
	tel     *telemetry.Metrics
	ops     *telemetry.Server
	metrics *metrics
	// tlsConf is the TLS listeners' configuration (nil without TLS),
	// whose session ticket keys reloadTicketKeys replaces.
	tlsConf atomic.Pointer[tls.Config]

	mochi *mqtt.Server
	// hooks are the hooks added to mochi, for the CONNECT sequence and the
	// end of a connection that the frontend runs itself (serve.go).
	hooks    *mqtt.Hooks
	hook     *ingest.Hook
	sessions *sessions.Hook
	auth     *authHook
	producer *kgo.Client
	changes  *kgo.Client // subscription change log producer
	events   *kgo.Client // session events and receipts producer; nil when off
	admin    *kadm.Client
	// durability reads the inbound topic's replication (kafka durability
	// in the log, fleetgate_kafka_topic_*).
	durability *kafka.DurabilityWatch
	rdb        redis.UniversalClient
	// replication and replicas hold SUBACKs and UNSUBACKs until the
	// Redis replicas have the writes (nil: subscriptions.redis-replica-acks 0).
	replication *session.Replication
	replicas    *session.Barrier
	store       *session.Store
	// owner names this process in the session store: the node id and the
	// start time. A node restarted with the same id is a new owner, so the
	// sessions and pending wills its previous run left behind are swept
	// like those of any dead node once that run's liveness lapses.
	owner string

	listeners []listeners.Listener
	deadlines *deadlines     // credential expiries of the connections; their read deadlines when served lean
	reads     *readPool      // the buffers connections read into (read.go)
	poller    *poller        // parked connections (park.go); nil: none park
	parked    atomic.Int64   // connections parked now
	conns     sync.WaitGroup // connections being served
	connsMu   sync.Mutex     // orders conns.Add before the drain's conns.Wait
	draining  bool           // guarded by connsMu; no new connection is served
	admitted  atomic.Int64   // connections counted against mqtt.max-clients

	kafkaErr   atomic.Pointer[error] // last Kafka reachability result; nil pointer: not checked yet
	topicReady atomic.Bool
	started    chan struct{}
	closeOnce  sync.Once
}

// Option is an optional dependency of New.
type Option func(*options)

type options struct {
	tracer trace.TracerProvider
}

// WithTracerProvider traces every produced record with tp and writes the
// W3C traceparent into its headers. Without it nothing is traced, but a
// traceparent user property sent by an MQTT 5 publisher is kept as such.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

// New builds a frontend from a validated configuration. It does no I/O.
func New(cfg Config, log *slog.Logger, tel *telemetry.Metrics, opts ...Option) (*Server, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	s := &Server{cfg: cfg, log: log.With("component", "frontend"), tel: tel, started: make(chan struct{}), deadlines: newDeadlines(), reads: newReadPool(cfg.MQTT.ReadBufferSize)}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MQTT.MaxPacketSize)
	caps.ReceiveMaximum = uint16(cfg.MQTT.ReceiveMaximum)
	// mochi's default, 65,535, would let one client pin as many topic
	// names in memory. mochi answers an alias above it with DISCONNECT
	// 0x94 [MQTT-3.3.2-9]; the sessions hook announces it in CONNACK.
	caps.TopicAliasMaximum = uint16(cfg.MQTT.TopicAliasMaximum)
	caps.MaximumClientWritesPending = int32(cfg.MQTT.WritesPending)
	if cfg.MQTT.Serve == ServeLean {
		// Nothing is queued to mochi's outbound queue (local fan-out is
		// off) and no WriteLoop would drain it: one slot instead of
		// mqtt.max-client-writes-pending saves ~0.5 KiB per connection.
		caps.MaximumClientWritesPending = 1
	}
	// mochi's own MaximumClients stays unbounded: it counts clients only
	// once authenticated, so a storm of CONNECTs passes it together;
	// mqtt.max-clients is held in OnConnect (admission.go).
	s.mochi = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// mqtt.read-buffer-size buffers in conn.Read, lent while it holds
		// bytes (read.go): mochi's own is bufio's least.
		ClientNetReadBufferSize:  mochiReadBuffer(cfg.MQTT.ReadBufferSize),
		ClientNetWriteBufferSize: cfg.MQTT.WriteBufferSize,
		// mochi logs whole packets ("pk", "packet", "will") on errors:
		// payloads must never reach the logs.
		Logger: telemetry.Filtered(log.With("component", "mochi"), slog.LevelInfo, "pk", "packet", "will"),
		// $SYS topics would only reach local subscribers, and local
		// fan-out is off: publish them rarely.
		SysTopicResendInterval: 3600,
	})
	var err error
	if s.metrics, err = newMetrics(tel.Provider, &s.mochi.Info.ClientsConnected, &s.parked); err != nil {
		return nil, err
	}

	// Batches large enough for the biggest PUBLISH plus headers and
	// framing, but never larger than the topic takes: a record too large
	// for it then fails alone, not with the records batched beside it.
	maxRecord := int32(min(int64(cfg.MQTT.MaxPacketSize)+64<<10, int64(cfg.Kafka.MaxMessageBytes)))
	if int64(cfg.MQTT.MaxPacketSize) > int64(cfg.Kafka.MaxMessageBytes) {
		log.Warn("mqtt.max-packet-size is above kafka.max-message-bytes: publishes too large for a Kafka batch get PUBACK 0x95 (MQTT 3.1.1: a closed connection)",
			"max_packet_size", cfg.MQTT.MaxPacketSize.String(), "max_message_bytes", cfg.Kafka.MaxMessageBytes.String())
	}
	s.producer, err = kafka.NewProducer(cfg.Kafka, kafka.ProducerOptions{
		DeliveryTimeout:  cfg.Ingest.AckTimeout,
		MaxBufferedBytes: int64(cfg.Ingest.MaxUnackedBytes) + int64(maxRecord),
		MaxRecordBytes:   maxRecord,
	}, log, kafka.Telemetry{Meter: tel.Provider, Tracer: o.tracer, Hot: tel.Hot})
	if err != nil {
		return nil, err
	}
	if s.admin, err = kafka.NewAdmin(cfg.Kafka, log); err != nil {
		return nil, err
	}
	if s.durability, err = kafka.NewDurabilityWatch(s.admin, cfg.Kafka.Topic, log, tel.Provider, 5*time.Minute); err != nil {
		return nil, err
	}
	if s.changes, err = kafka.NewChangelogProducer(cfg.Kafka, cfg.Subscriptions.WriteTimeout, log, kafka.Telemetry{Meter: tel.Provider, Hot: tel.Hot}); err != nil {
		return nil, err
	}
	var emitter *events.Emitter
	if cfg.Events.Enabled() {
		// A client of their own, so that receipts (one per delivery) never
		// queue in front of a subscription change or a publish.
		if s.events, err = kafka.NewChangelogProducer(cfg.Kafka, 10*time.Second, log, kafka.Telemetry{Meter: tel.Provider, Hot: tel.Hot}); err != nil {
			return nil, err
		}
		if emitter, err = events.NewEmitter(s.events, cfg.Events, cfg.Node.ID, log, tel.Provider); err != nil {
			return nil, err
		}
	}
	s.owner = cfg.Node.ID + "@" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	s.rdb = cfg.Session.Redis.NewClient()
	s.store = session.New(s.rdb, cfg.Session, session.WithLogger(log))
	if n := cfg.Subscriptions.RedisReplicaAcks; n > 0 {
		s.replication = session.NewReplication(s.rdb, s.owner, n, cfg.Subscriptions.RedisReplicaTimeout)
		s.replicas = session.NewBarrier(s.replication, time.Second)
	}
	willScheduler, err := wills.NewScheduler(s.store, s.producer, cfg.Kafka.Topic, cfg.Node.ID, cfg.Delivery.StoreTimeout, log, tel.Provider)
	if err != nil {
		return nil, err
	}
	deliverer, err := delivery.New(cfg.Delivery, s.store, emitter, log, tel.Provider)
	if err != nil {
		return nil, err
	}
	cfg.Auth.Resolve(cfg.MQTT.TLSClientCAFile != "")
	cfg.Auth.Cert.CAFile = cfg.MQTT.TLSClientCAFile
	chain, err := auth.New(cfg.Auth)
	if err != nil {
		return nil, err
	}
	// The rules are read by Run (loadAccess), before any connection.
	s.auth = &authHook{chain: chain, server: s.mochi, log: log.With("component", "auth"), metrics: s.metrics,
		atExpiry: cfg.Authz.DisconnectAtExpiry, topics: cfg.MQTT.Topics.Limits()}
	deliverer.SetAuthorizer(s.auth)
	subs, err := subscribe.New(subscribe.Options{
		Authorizer: s.auth,
		Server:     s.mochi,
		Store:      s.store,
		ChangeLog:  subscriptions.NewWriter(s.changes, cfg.Subscriptions.Topic, subscriptions.AnnounceSettle(cfg.Subscriptions.Settle)),
		Retained:   retained.New(s.rdb, log),
		Events:     emitter,
		Timeout:    cfg.Delivery.StoreTimeout,
		Settle:     cfg.Subscriptions.Settle,
		Replicas:   s.replicas,
		// Filters over them get SUBACK 0x8F / 0x80 (docs/limits.md).
		TopicLimits: cfg.MQTT.Topics.Limits(),
	}, log, tel.Provider)
	if err != nil {
		return nil, err
	}
	// Inbound QoS 2 state is fenced by the epoch of the connection's
	// session, which the session layer holds.
	exactly := exactlyonce.New(s.store, func(cl *mqtt.Client) (uint64, bool) { return s.sessions.Epoch(cl) }, cfg.Delivery.StoreTimeout, log)
	// The shared subscriptions' messages that ended sessions held go back
	// to the dispatchers for another member.
	handBack, err := handback.New(s.producer, cfg.Kafka.Topic, cfg.Ingest.AckTimeout, log, tel.Provider)
	if err != nil {
		return nil, err
	}
	s.sessions, err = sessions.New(sessions.Options{
		Node:         s.owner,
		Server:       s.mochi,
		Store:        s.store,
		Redis:        s.rdb,
		Delivery:     deliverer,
		Subscribe:    subs,
		ExactlyOnce:  exactly,
		Wills:        willScheduler,
		Events:       emitter,
		HandBack:     handBack,
		Replicas:     s.replicas,
		StoreTimeout: cfg.Delivery.StoreTimeout,
		PollInterval: cfg.Delivery.PollInterval,
	}, log, tel.Provider)
	if err != nil {
		return nil, err
	}
	s.auth.owners = s.sessions
	var quotas ingest.Quotas // a rules file may set quotas by identity or group
	if cfg.Authz.RulesFile != "" {
		quotas = s.auth
	}
	s.hook, err = ingest.New(cfg.Ingest, ingest.Options{
		Node:              cfg.Node.ID,
		Topic:             cfg.Kafka.Topic,
		ReceiveMaximum:    caps.ReceiveMaximum,
		MaxInflightAge:    caps.MaximumMessageExpiryInterval,
		ExactlyOnce:       exactly,
		Authorizer:        s.auth,
		Quotas:            quotas,
		TopicLimits:       cfg.MQTT.Topics.Limits(),
		TopicAliasMaximum: caps.TopicAliasMaximum,
		Retained:          retained.NewQuota(cfg.Retained, s.rdb, log),
	}, s.producer, log, tel.Provider)
	if err != nil {
		return nil, err
	}

	s.hooks = &mqtt.Hooks{Log: s.mochi.Log}
	for _, h := range []mqtt.Hook{&connHook{s: s}, s.auth, s.hook, s.sessions} {
		if err := s.mochi.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("adding hook %s: %w", h.ID(), err)
		}
		if err := s.hooks.Add(h, nil); err != nil {
			return nil, fmt.Errorf("adding hook %s: %w", h.ID(), err)
		}
	}

	s.ops = telemetry.NewServer(cfg.HTTP, tel, log)
	s.ops.AddCheck("kafka", s.kafkaReady)
	s.ops.AddCheck("mqtt", func(context.Context) error {
		// Credentials and rules load before the listeners open (a large
		// rules file takes seconds): not ready until devices can connect.
		select {
		case <-s.started:
			return nil
		default:
			return errors.New("listeners not started yet")
		}
	})
	s.ops.AddCheck("redis", func(ctx context.Context) error {
		if err := s.rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis %v: %w", []string(cfg.Session.Redis.Addrs), err)
		}
		return nil
	})
	return s, nil
}

// Addr returns the bound address of a listener (ListenerTCP, ...), or "".
func (s *Server) Addr(id string) string {
	for _, l := range s.listeners {
		if l.ID() == id {
			return l.Address()
		}
	}
	return ""
}

// OpsAddr returns the bound address of the operations server.
func (s *Server) OpsAddr() string { return s.ops.Addr() }

// Started is closed once the listeners accept connections.
func (s *Server) Started() <-chan struct{} { return s.started }

// Hook exposes the ingest hook, for tests and the benchmark.
func (s *Server) Hook() *ingest.Hook { return s.hook }

func (s *Server) kafkaReady(context.Context) error {
	p := s.kafkaErr.Load()
	if p == nil {
		return errors.New("not checked yet")
	}
	if *p != nil {
		return *p
	}
	if !s.topicReady.Load() {
		return fmt.Errorf("topic %s not ensured yet", s.cfg.Kafka.Topic)
	}
	return nil
}

// watchKafka keeps the Kafka readiness current and ensures the topic.
func (s *Server) watchKafka(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var wasDown bool
	// A broker stopped mid-request holds a Ping past any deadline
	// (franz-go waits for the answer to a request it wrote): the check
	// waits 3 s for it, and while it is unanswered no other is sent.
	var pending chan error
	for {
		if pending == nil {
			pending = make(chan error, 1)
			go func(out chan<- error) { out <- s.producer.Ping(ctx) }(pending)
		}
		var err error
		select {
		case err = <-pending:
			pending = nil
		case <-time.After(3 * time.Second):
			err = errors.New("no answer to a metadata request within 3s")
		case <-ctx.Done():
			return
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			err = fmt.Errorf("brokers %v unreachable: %w", []string(s.cfg.Kafka.Brokers), err)
			if !wasDown {
				s.log.Warn("kafka unreachable; not ready", "err", err)
			}
		} else if wasDown {
			s.log.Info("kafka reachable again")
		}
		wasDown = err != nil
		s.kafkaErr.Store(&err)
		if err == nil && !s.topicReady.Load() {
			// Within: a broker that freezes meanwhile does not hold the
			// drain.
			if terr := kafka.Within(ctx, func(ctx context.Context) error {
				return kafka.EnsureTopics(ctx, s.admin, s.cfg.Kafka, s.topics()...)
			}); terr != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("ensuring kafka topics", "err", terr)
			} else {
				s.topicReady.Store(true)
				s.log.Info("kafka topics ready", "topic", s.cfg.Kafka.Topic)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchDurability checks the inbound topic's replication once it exists
// and every 5 minutes after (kafka.DurabilityWatch), beside watchKafka so
// that a slow answer never holds the readiness check.
func (s *Server) watchDurability(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if s.topicReady.Load() {
			s.durability.CheckIfDue(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// topics are the topics the frontend makes sure exist: the subscription
// change log always, the inbound and events topics when fleetgate creates
// topics (kafka.create-topic).
func (s *Server) topics() []kafka.TopicSpec {
	// fleetgate's own topics: the subscription change log, and the topic
	// that hands the shared subscriptions' messages of ended sessions back
	// to the dispatchers (they create both too; whoever starts first).
	ts := []kafka.TopicSpec{{Name: s.cfg.Subscriptions.Topic, Partitions: s.cfg.Subscriptions.Partitions, Compacted: true},
		{Name: handoff.SharedTopic(s.cfg.Kafka.Topic), Partitions: s.cfg.Kafka.Partitions}}
	if !s.cfg.Kafka.CreateTopic {
		return ts
	}
	ts = append(ts, kafka.TopicSpec{Name: s.cfg.Kafka.Topic, Partitions: s.cfg.Kafka.Partitions})
	if s.cfg.Events.Enabled() {
		ts = append(ts, kafka.TopicSpec{Name: s.cfg.Events.Topic, Partitions: s.cfg.Events.Partitions})
	}
	return ts
}

// runDelivery keeps the delivery hook's notice subscription running.
func (s *Server) runDelivery(ctx context.Context) {
	for {
		err := s.sessions.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("delivery notices interrupted; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// Run starts the listeners and serves until ctx is cancelled, then drains:
// readiness goes false, listeners close, accepted publishes are produced and
// acknowledged (up to shutdown.timeout), MQTT 5 clients get DISCONNECT 0x8B,
// and the Kafka client is flushed and closed. It returns nil after a clean
// drain, and an error wrapping ErrDrainTimeout when shutdown.timeout ran
// out with publishes still awaiting Kafka.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	if err := s.ops.Start(); err != nil {
		return err
	}
	// The node's background work runs until the drain is over (the
	// heartbeat keeps the node alive while it drains); the first error of
	// any part ends the node as a cancelled ctx does.
	bgCtx, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	g, gctx := errgroup.WithContext(bgCtx)
	g.Go(func() error { s.watchKafka(gctx); return nil })
	g.Go(func() error { s.watchDurability(gctx); return nil })
	s.log.Info("session owner", "owner", s.owner)
	g.Go(func() error { return s.store.RunHeartbeat(gctx, s.owner, s.sessions.Swept) })
	g.Go(func() error { s.runDelivery(gctx); return nil })
	g.Go(func() error { s.deadlines.run(gctx); return nil })
	g.Go(func() error { s.logReplicas(gctx); return nil })

	if err := s.loadAccess(); err != nil {
		stopBackground()
		return errors.Join(err, g.Wait())
	}
	g.Go(func() error { s.watchAccessFiles(gctx); return nil })
	if err := s.mochi.Serve(); err != nil {
		stopBackground()
		return errors.Join(fmt.Errorf("starting mqtt server: %w", err), g.Wait())
	}
	if p, err := newPoller(&s.parked); err == nil {
		// Until the drain is over: connections that park while it runs
		// are resumed by their socket or their Close.
		s.poller = p
		g.Go(func() error { p.run(); return nil })
		g.Go(func() error { <-gctx.Done(); p.stop(); return nil })
	} else {
		s.log.Info("idle connections wait on a goroutine each", "err", err)
	}
	if err := s.startListeners(); err != nil {
		stopBackground()
		return errors.Join(err, g.Wait())
	}
	close(s.started)
	select {
	case <-ctx.Done():
	case <-gctx.Done(): // a background part failed
	}
	err := s.drain()
	stopBackground()
	return errors.Join(err, g.Wait())
}

// loadAccess reads the credentials and the rules file before the first
// connection; a file that does not load stops the node.
func (s *Server) loadAccess() error {
	a := s.auth
	if err := a.chain.Load(); err != nil {
		return err
	}
	a.checkCRLAge()
	if p := s.cfg.Authz.RulesFile; p != "" {
		h, err := acl.Load(p)
		if err != nil {
			return fmt.Errorf("authz.rules-file: %w", err)
		}
		a.rules = h
		r := h.Rules()
		a.log.Info("authorization rules loaded", "file", p, "rules", r.Len(), "identities", r.Identities(), "groups", r.Groups())
		releaseParseGarbage()
	} else {
		a.rules = acl.AllowAll()
		why := "authz.allow-all=true"
		if !s.cfg.Authz.AllowAll {
			why = "auth.allow-anonymous=true, no authz.rules-file"
		}
		a.log.Warn("every topic is open: every client may publish and subscribe to every topic", "because", why)
	}
	if s.cfg.Auth.AllowAnonymous {
		a.log.Warn("anonymous clients are accepted (auth.allow-anonymous=true)", "methods", a.chain.Methods())
	} else {
		a.log.Info("authentication", "methods", a.chain.Methods())
	}
	return nil
}

// watchAccessFiles reloads the credentials and the rules on SIGHUP, and
// when one of their files changed (checked every authz.reload-interval:
// Kubernetes updates a mounted Secret by swapping a symlink, which a stat
// through the link sees).
func (s *Server) watchAccessFiles(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if d := s.cfg.Authz.ReloadInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	seen := s.accessFiles()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			seen = s.accessFiles()
			s.auth.reload(ctx, "sighup")
			s.reloadTicketKeys(ctx, "sighup")
		case <-tick:
			if now := s.accessFiles(); now != seen {
				seen = now
				s.auth.reload(ctx, "file changed")
				s.reloadTicketKeys(ctx, "file changed")
			}
		}
	}
}

// accessFiles fingerprints the files behind authentication and
// authorization: each one's path, size and modification time.
func (s *Server) accessFiles() string {
	a, z := s.cfg.Auth, s.cfg.Authz
	var b strings.Builder
	for _, p := range append([]string{a.PasswordFile, a.JWT.JWKSFile, a.JWT.HMACSecretFile, a.Cert.CRLFile, z.RulesFile, s.cfg.MQTT.TLSSessionTicketKeysFile}, a.JWT.KeyFiles...) {
		if p == "" {
			continue
		}
		fmt.Fprintf(&b, "%s|", p)
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d|%d", fi.Size(), fi.ModTime().UnixNano())
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func (s *Server) startListeners() error {
	m := s.cfg.MQTT
	pp, err := m.Listen.Proxy() // nil when mqtt.proxy-protocol is off
	if err != nil {
		return err
	}
	refused := listen.WithRefusalHook(s.metrics.listenerRefused)
	proxy := listen.WithProxyProtocol(pp)
	// One bucket for all listeners: mqtt.connect-rate is per node.
	paced := listen.WithAcceptRate(m.Admission.limiter(), s.metrics.acceptDelayed)
	ka := m.Listen.KeepAlive()
	var tc *tls.Config
	if m.TLSEnabled() {
		if tc, err = s.tlsConfig(); err != nil {
			return err
		}
	}
	var ls []listeners.Listener
	if a := m.TCPAddr; a != "" {
		ls = append(ls, listen.NewTCP(ListenerTCP, a, proxy, refused, paced, ka))
	}
	if tc != nil {
		ls = append(ls, listen.NewTCP(ListenerTLS, m.TLSAddr, listen.WithTLS(tc), proxy, refused, paced, ka))
	}
	if a := m.WSAddr; a != "" {
		var wsTLS *tls.Config // nil: plain ws
		if m.Listen.WSTLS {
			wsTLS = tc
		}
		ls = append(ls, listen.NewWebSocket(ListenerWS, a, listen.WithTLS(wsTLS), proxy, refused, paced, ka,
			listen.WithAllowedOrigins(m.Listen.WSAllowedOrigins...)))
	}
	for _, l := range ls {
		if err := l.Init(s.log); err != nil {
			for _, done := range s.listeners {
				done.Close(func(string) {})
			}
			return fmt.Errorf("mqtt listener %s on %s: %w", l.ID(), l.Address(), err)
		}
		s.listeners = append(s.listeners, l)
		go l.Serve(s.establish)
		s.log.Info("mqtt listener started", "listener", l.ID(), "addr", l.Address())
	}
	return nil
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	m := s.cfg.MQTT
	cert, err := tls.LoadX509KeyPair(m.TLSCertFile, m.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt.tls-cert-file / mqtt.tls-key-file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if m.TLSClientCAFile != "" {
		pem, err := os.ReadFile(m.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls-client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls-client-ca-file: %s holds no PEM certificate", m.TLSClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if f := m.TLSSessionTicketKeysFile; f != "" {
		keys, err := ticketKeys(f)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls-session-ticket-keys-file: %w", err)
		}
		tc.SetSessionTicketKeys(keys)
		s.log.Info("tls session tickets: keys shared with the other frontends", "file", f, "keys", len(keys))
	}
	s.tlsConf.Store(tc)
	return tc, nil
}

// establish serves one accepted connection on the calling goroutine: with
// mqtt.serve=lean fleetgate serves it (serve.go), with mqtt.serve=mochi
// mochi's EstablishConnection does. Its frame stays on the connection's
// stack while it waits for bytes: keep it small.
func (s *Server) establish(listener string, nc net.Conn) error {
	if s.cfg.MQTT.Serve == ServeMochi {
		return s.establishMochi(listener, nc)
	}
	return s.establishLean(listener, nc)
}

// establishMochi serves one accepted connection with mochi's
// EstablishConnection.
//
//go:noinline
func (s *Server) establishMochi(listener string, nc net.Conn) error {
	if !s.trackConn() {
		_ = nc.Close() // accepted just as the node started draining
		return nil
	}
	c := newConn(nc, s.cfg.MQTT.Admission.IdleTimeout, s.deadlines, s.reads)
	// mochi sets no deadline before the first packet: bound the wait for
	// CONNECT ourselves. mochi replaces the deadline after CONNECT with
	// 1.5 × keep-alive [MQTT-3.1.2-22].
	_ = nc.SetDeadline(time.Now().Add(s.cfg.MQTT.ConnectTimeout))
	err := s.mochi.EstablishConnection(listener, c)
	if c.established && !c.disconnected {
		s.endUnattached(c, err)
	}
	s.connEnded(listener, nc, c, err)
	return nil // logged by connEnded; mochi's listeners would log it again without a message
}

// endUnattached ends a connection whose session was set up but which mochi's
// attachClient left without its end: when the CONNACK (or the resend of
// inflight messages after it) cannot be written, it returns at once, without
// the will, OnDisconnect or the removal of the client from its map. Left so,
// the session stayed connected to this node in Redis (its messages handed
// to a connection that no longer was, its will never due) and the node kept
// the connection's state. It runs what attachClient runs after its read
// loop (endSession, as leanConn.end does) and takes the client out of
// mochi's map.
//
//go:noinline
func (s *Server) endUnattached(c *conn, err error) {
	cl := c.mqttClient()
	if cl == nil {
		return
	}
	if err == nil {
		err = io.ErrUnexpectedEOF // no DISCONNECT came: the will is due
	}
	if s.endSession(cl, err) && !cl.IsTakenOver() {
		if cur, ok := s.mochi.Clients.Get(cl.ID); ok && cur == cl {
			s.mochi.Clients.Delete(cl.ID)
		}
	}
}

// connEnded finishes a connection that ended with err, whoever served it:
// its mqtt.max-clients count is released, an MQTT 5 client gets the
// DISCONNECT reason code it is owed (conn.finish), the socket is closed,
// the end is counted and logged, and the connection is untracked.
//
//go:noinline
func (s *Server) connEnded(listener string, nc net.Conn, c *conn, err error) {
	defer s.conns.Done()
	c.wheel.forget(c)
	if c.admitted {
		s.admitted.Add(-1)
	}
	code, label, owed := c.disconnectReason(err)
	if c.closing.Load() {
		if cl := c.mqttClient(); cl != nil && cl.StopCause() != nil {
			err = cl.StopCause() // the server's reason, not the read it interrupted
		}
	}
	c.finish(code, owed)
	s.metrics.disconnect(label)
	if cl := c.mqttClient(); cl != nil {
		lvl := slog.LevelDebug
		if owed {
			lvl = slog.LevelInfo
		}
		s.log.Log(context.Background(), lvl, "client disconnected", "client_id", cl.ID, "remote", cl.Net.Remote, "listener", listener, "reason", label, "err", err)
	} else if label != "client_disconnect" {
		s.log.Debug("connection closed before CONNECT", "remote", nc.RemoteAddr().String(), "listener", listener, "err", err)
	}
}

// trackConn counts a new connection, unless the node is draining.
func (s *Server) trackConn() bool {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.draining {
		return false
	}
	s.conns.Add(1)
	return true
}

// drain implements the shutdown sequence of Run.
func (s *Server) drain() error {
	var errs []error
	start := time.Now()
	deadline := start.Add(s.cfg.Shutdown.Timeout)
	s.log.Info("shutting down: draining", "timeout", s.cfg.Shutdown.Timeout)
	s.ops.SetDraining()
	for _, l := range s.listeners {
		l.Close(func(string) {})
	}
	s.connsMu.Lock()
	s.draining = true // a connection accepted just before the close is turned away
	s.connsMu.Unlock()
	s.hook.Drain()
	for !s.hook.Idle() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !s.hook.Idle() {
		// Records whose publishes were answered at their ack deadline
		// (a failure) stay in the producer until Kafka settles them:
		// unacked bytes with no publish pending.
		pending, unsettled := s.hook.Outstanding(), s.hook.UnackedBytes()
		s.log.Warn("shutdown timeout: kafka has not settled every record; clients not answered yet resend theirs",
			"pending_acks", pending, "unacked_bytes", unsettled)
		errs = append(errs, fmt.Errorf("%w: after shutdown.timeout %s, %d publishes still awaiting kafka (their clients resend them), %d bytes of records kafka has not settled",
			ErrDrainTimeout, s.cfg.Shutdown.Timeout, pending, unsettled))
	}
	s.disconnectAll()
	fctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
	defer cancel()
	if err := s.producer.Flush(fctx); err != nil {
		s.log.Warn("flushing kafka producer", "err", err)
		errs = append(errs, fmt.Errorf("flushing the kafka producer: %w", err))
	}
	defer s.flushEvents(deadline)
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	// A CONNECT that was being answered when the clients were told is
	// told once its session is registered.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(time.Until(deadline) + 2*time.Second)
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			s.disconnectAll()
		case <-giveUp:
			s.log.Warn("connections still closing at shutdown")
			errs = append(errs, fmt.Errorf("%w: connections still closing", ErrDrainTimeout))
			break wait
		}
	}
	s.sessions.Close()
	s.log.Info("shutdown complete", "took", time.Since(start).Round(time.Millisecond), "clean", len(errs) == 0)
	return errors.Join(errs...)
}

// disconnectAll tells every connected client that the node shuts down:
// DISCONNECT 0x8B on MQTT 5 [MQTT-3.14.2], a closed connection on 3.1.1.
// The sessions hook's registry names them (mochi's Server.Clients is empty
// with mqtt.serve=lean); a client told already is stopped, and is skipped.
func (s *Server) disconnectAll() {
	for _, cl := range s.sessions.Clients() {
		if cl.Closed() {
			continue
		}
		if cl.Properties.ProtocolVersion == 5 {
			_ = s.mochi.DisconnectClient(cl, packets.ErrServerShuttingDown)
		} else {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
}

// flushEvents gives the session events of the shutdown (the disconnects)
// until shortly after deadline to reach Kafka.
func (s *Server) flushEvents(deadline time.Time) {
	if s.events == nil {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
	defer cancel()
	if err := s.events.Flush(ctx); err != nil {
		s.log.Warn("flushing session events", "err", err)
	}
}

// logReplicas says once, at start, what SUBACKs and UNSUBACKs wait for of
// the Redis replicas: the first round also learns the primaries, so that a
// failover between a subscription's write and its round is seen.
func (s *Server) logReplicas(ctx context.Context) {
	if s.replicas == nil {
		s.log.Info("redis replication: CONNACK of a new session, SUBACK and UNSUBACK do not wait for Redis replicas (subscriptions.redis-replica-acks 0)")
		return
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		prims, err := s.replicas.Round(ctx)
		if err == nil {
			err = session.RoundError(prims)
		}
		if err == nil {
			desc, waits := session.DescribePrimaries(prims)
			if waits {
				s.log.Info("redis replication: CONNACK of a new session, SUBACK and UNSUBACK wait until the primaries' replicas hold them", "primaries", desc)
			} else {
				s.log.Info("redis replication: no primary has a replica, CONNACK, SUBACK and UNSUBACK wait for none", "primaries", desc)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("redis replication: cannot reach every primary yet; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

func (s *Server) close() {
	s.closeOnce.Do(func() {
		_ = s.mochi.Close()
		s.sessions.Close()
		s.producer.Close()
		s.changes.Close()
		if s.events != nil {
			s.events.Close()
		}
		s.admin.Close()
		if s.replication != nil {
			s.replication.Close()
		}
		_ = s.rdb.Close()
		_ = s.ops.Close()
	})
}
