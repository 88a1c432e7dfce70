package dispatch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
	"github.com/fleetgate/fleetgate/pkg/topic"
	"github.com/fleetgate/fleetgate/pkg/wills"
)

// ServiceConfig is the whole configuration of a dispatcher process.
type ServiceConfig struct {
	Dispatch      Config                 `yaml:"dispatch"`
	Kafka         kafka.Config           `yaml:"kafka"`
	Subscriptions subscriptions.Config   `yaml:"subscriptions"`
	Session       session.Config         `yaml:"session"`
	Log           telemetry.LogConfig    `yaml:"log"`
	GC            gcheadroom.Config      `yaml:"gc"`
	Procs         procs.Config           `yaml:"procs"`
	HTTP          telemetry.ServerConfig `yaml:"http"`
	Wills         wills.Config           `yaml:"wills"`
}

// RegisterFlags registers every dispatcher flag.
func (c *ServiceConfig) RegisterFlags(fs *flag.FlagSet) {
	c.Dispatch.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Subscriptions.RegisterFlags(fs)
	c.Session.RegisterFlags(fs)
	c.Log.RegisterFlags(fs)
	c.GC.RegisterFlags(fs)
	c.Procs.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs, ":9465")
	c.Wills.RegisterFlags(fs)
	if err := fs.Set("kafka.client-id", "fleetgate-dispatcher"); err != nil {
		panic(err)
	}
}

// Validate checks the whole configuration; errors name the field.
func (c *ServiceConfig) Validate() error {
	return errors.Join(c.Dispatch.Validate(), c.Kafka.Validate(), c.Subscriptions.Validate(), c.Session.Validate(), c.Log.Validate(), c.GC.Validate(), c.Procs.Validate(), c.Wills.Validate())
}

// Service is a dispatcher process: it follows the subscription change log
// into a topic.Index and, once the index is complete, routes the inbound
// topic into the session queues in Redis as a member of the consumer group.
type Service struct {
	cfg ServiceConfig
	log *slog.Logger
	// base is the logger without the service's component: each part
	// (consumer, router, sweepers, Kafka and Redis clients) adds its own.
	base *slog.Logger
	tel  *telemetry.Metrics
	ops  *telemetry.Server

	following chan struct{} // closed once the index is complete
	consumer  *Consumer
}

// NewService builds a dispatcher from a validated configuration. It does no
// I/O.
func NewService(cfg ServiceConfig, log *slog.Logger, tel *telemetry.Metrics) *Service {
	s := &Service{cfg: cfg, log: log.With("component", "dispatcher"), base: log, tel: tel, following: make(chan struct{})}
	s.ops = telemetry.NewServer(cfg.HTTP, tel, log)
	return s
}

// OpsAddr returns the bound address of the operations server.
func (s *Service) OpsAddr() string { return s.ops.Addr() }

// Run serves until ctx is cancelled and returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	if err := s.ops.Start(); err != nil {
		return err
	}
	defer s.ops.Close()
	// Not ready from the moment shutdown begins, before the work stops:
	// a rollout sees the process leave at once.
	stopDraining := context.AfterFunc(ctx, s.ops.SetDraining)
	defer stopDraining()

	rdb := s.cfg.Session.Redis.NewClient()
	defer rdb.Close()
	// Direct delivery: the router's notices carry the messages it hands
	// straight to connected sessions.
	store := session.New(rdb, s.cfg.Session, session.WithLogger(s.base), session.WithDirectDelivery())
	s.ops.AddCheck("redis", func(ctx context.Context) error {
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis %v: %w", []string(s.cfg.Session.Redis.Addrs), err)
		}
		return nil
	})
	s.ops.AddCheck("subscriptions", func(context.Context) error {
		select {
		case <-s.following:
			return nil
		default:
			return errors.New("subscription index not loaded yet")
		}
	})

	if err := s.ensureTopics(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	tel := kafka.Telemetry{Meter: s.tel.Provider, Hot: s.tel.Hot}
	changes, err := kafka.NewChangelogConsumer(s.cfg.Kafka, s.cfg.Subscriptions.Topic, s.base, tel)
	if err != nil {
		return err
	}
	defer changes.Close()
	ix := &topic.Index{}
	follower := subscriptions.NewFollower(changes, s.cfg.Subscriptions.Topic, ix, s.base, subscriptions.ReuseWithin(s.cfg.Subscriptions.Settle))
	if err := registerIndexChecks(s.tel.Provider, follower); err != nil {
		return err
	}

	rets := retained.New(rdb, s.base)
	router, err := NewRouter(ix, store, s.base, s.tel.Provider, WithNotifier(NewRedisNotifier(rdb)),
		WithRetained(rets), WithPresence(store), WithBarrier(follower), WithMaxBatchBytes(int(s.cfg.Dispatch.MaxBatchBytes)),
		WithFullQueueWait(s.cfg.Dispatch.FullQueueWait), WithSharedTopic(handoff.SharedTopic(s.cfg.Kafka.Topic)))
	if err != nil {
		return err
	}
	// Wills of the clients of dead frontends go to the inbound topic, as
	// the frontends' own wills do; records that can never be routed go to
	// the dead-letter topic.
	producer, err := kafka.NewProducer(s.cfg.Kafka, kafka.ProducerOptions{DeliveryTimeout: s.cfg.Wills.ProduceTimeout}, s.base, tel)
	if err != nil {
		return err
	}
	defer producer.Close()
	dead := NewKafkaDeadLetters(producer, s.cfg.Dispatch.DeadLetterTopicName(s.cfg.Kafka.Topic))
	s.consumer = NewConsumer(s.cfg.Dispatch, s.cfg.Kafka, router, dead, s.base, tel)
	if n := s.cfg.Dispatch.RedisReplicaAcks; n > 0 {
		rep := session.NewReplication(rdb, markerOwner(), n, s.cfg.Dispatch.RedisReplicaTimeout)
		defer rep.Close()
		gate, err := newReplicationGate(rep, min(100*time.Millisecond, s.cfg.Dispatch.CommitInterval), s.cfg.Dispatch.RedisReplicaTimeout, s.log, s.tel.Provider)
		if err != nil {
			return fmt.Errorf("creating the replication gate's metrics: %w", err)
		}
		s.consumer.withReplicationGate(gate)
	}
	if err := registerLag(s.tel.Provider, s.consumer.lag, s.cfg.Kafka.Topic); err != nil {
		return fmt.Errorf("creating fleetgate_dispatch_lag_records: %w", err)
	}
	if err := registerQuietWaits(s.tel.Provider, s.consumer); err != nil {
		return fmt.Errorf("registering fleetgate_dispatch_quiet_waits: %w", err)
	}
	s.ops.AddCheck("kafka", func(context.Context) error { return s.consumer.Ready() })
	// The shared subscriptions' messages that the sessions of a dead
	// frontend held go back to the dispatchers, for another member.
	handBack, err := handback.New(producer, s.cfg.Kafka.Topic, s.cfg.Wills.ProduceTimeout, s.base, s.tel.Provider)
	if err != nil {
		return err
	}
	sweeper, err := wills.NewSweeper(store, producer, s.cfg.Kafka.Topic, s.cfg.Wills.SweepInterval, s.base, s.tel.Provider, wills.WithHandBack(handBack))
	if err != nil {
		return err
	}

	// Tombstones of expired sessions' subscriptions go to the change log.
	changeWriter, err := kafka.NewChangelogProducer(s.cfg.Kafka, s.cfg.Subscriptions.WriteTimeout, s.base, tel)
	if err != nil {
		return err
	}
	defer changeWriter.Close()
	expiry, err := NewExpirySweeper(store, ix, subscriptions.NewWriter(changeWriter, s.cfg.Subscriptions.Topic, subscriptions.AnnounceSettle(s.cfg.Subscriptions.Settle)),
		s.cfg.Dispatch.ExpirySweepInterval, s.base, s.tel.Provider, WithExpiredHandBack(handBack))
	if err != nil {
		return err
	}
	persistence, err := session.NewPersistenceWatch(rdb, s.base, s.tel.Provider, time.Minute)
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { persistence.Run(gctx); return nil })
	g.Go(func() error { return follower.Run(gctx) })
	g.Go(func() error { return sweeper.Run(gctx) })
	g.Go(func() error {
		// Retained messages of a build before the buckets move into them;
		// readers read both meanwhile.
		rets.RunMigration(gctx, time.Minute)
		return nil
	})
	g.Go(func() error {
		start := time.Now()
		select {
		case <-follower.Ready():
		case <-gctx.Done():
			return nil
		}
		close(s.following)
		s.log.Info("subscription index loaded; routing", "subscriptions", ix.Len(), "took", time.Since(start).Round(time.Millisecond))
		// The sweeper reads the index: only a complete one names every
		// subscription of an expired session.
		g.Go(func() error { return expiry.Run(gctx) })
		return s.consumer.Run(gctx)
	})
	err = g.Wait()
	s.ops.SetDraining()
	if ctx.Err() != nil {
		if s.consumer != nil && s.consumer.leftUnanswered.Load() {
			return kafka.ErrLeaveTimeout
		}
		return nil
	}
	return err
}

// ensureTopics creates the subscription change log (compacted), the
// dead-letter topic and, when configured, the inbound topic, retrying while
// Kafka is unreachable.
func (s *Service) ensureTopics(ctx context.Context) error {
	adm, err := kafka.NewAdmin(s.cfg.Kafka, s.base)
	if err != nil {
		return err
	}
	defer adm.Close()
	for {
		topics := []kafka.TopicSpec{{Name: s.cfg.Subscriptions.Topic, Partitions: s.cfg.Subscriptions.Partitions, Compacted: true},
			{Name: s.cfg.Dispatch.DeadLetterTopicName(s.cfg.Kafka.Topic), Partitions: s.cfg.Kafka.Partitions},
			{Name: handoff.SharedTopic(s.cfg.Kafka.Topic), Partitions: s.cfg.Kafka.Partitions}}
		if s.cfg.Kafka.CreateTopic {
			topics = append(topics, kafka.TopicSpec{Name: s.cfg.Kafka.Topic, Partitions: s.cfg.Kafka.Partitions})
		}
		err := kafka.EnsureTopics(ctx, adm, s.cfg.Kafka, topics...)
		if err == nil {
			return nil
		}
		s.log.Warn("ensuring kafka topics; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
