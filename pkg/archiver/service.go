package archiver

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Service is an archiver process: it makes sure MongoDB's indexes exist,
// runs the retention sweeper and the consumer, and serves /readyz, which is
// ready while the indexes exist, MongoDB answers, and the last batch was
// written.
type Service struct {
	cfg ServiceConfig
	log *slog.Logger
	tel *telemetry.Metrics
	ops *telemetry.Server

	indexed  atomic.Bool
	consumer atomic.Pointer[Consumer]
}

// NewService builds an archiver from a validated configuration. It does no
// I/O.
func NewService(cfg ServiceConfig, log *slog.Logger, tel *telemetry.Metrics) *Service {
	s := &Service{cfg: cfg, log: log.With("component", "archiver"), tel: tel}
	s.ops = telemetry.NewServer(cfg.HTTP, tel, log)
	return s
}

// OpsAddr returns the bound address of the operations server.
func (s *Service) OpsAddr() string { return s.ops.Addr() }

// Lag returns the records of the partitions this archiver owns that are
// not archived yet, as last computed (fleetgate_archive_lag_records summed).
func (s *Service) Lag() int64 {
	if c := s.consumer.Load(); c != nil {
		return c.Lag()
	}
	return 0
}

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

	store, err := archive.Open(ctx, s.cfg.Archive, s.log)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = store.Close(cctx)
	}()
	consumer, err := NewConsumer(s.cfg.Archiver, s.cfg.Archive, s.cfg.Kafka, s.cfg.Events.Topic, s.cfg.Subscriptions.Topic,
		store, s.log, kafka.Telemetry{Meter: s.tel.Provider, Hot: s.tel.Hot})
	if err != nil {
		return err
	}
	s.consumer.Store(consumer)
	s.ops.AddCheck("mongodb", func(ctx context.Context) error {
		if !s.indexed.Load() {
			return errors.New("indexes not ensured yet")
		}
		return store.Ping(ctx)
	})
	s.ops.AddCheck("archive", func(context.Context) error { return consumer.Ready() })

	if ok, err := s.ensureTopics(ctx); !ok {
		return err
	}
	if !s.ensureIndexes(ctx, store) {
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return store.RunSweeper(gctx) })
	g.Go(func() error { return consumer.Run(gctx) })
	err = g.Wait()
	s.ops.SetDraining()
	if ctx.Err() != nil {
		if consumer.leftUnanswered.Load() {
			return kafka.ErrLeaveTimeout
		}
		return nil
	}
	return err
}

// ensureIndexes creates the indexes, retrying with backoff while MongoDB is
// unreachable (it may start after the archiver). It returns false when ctx
// was cancelled first.
func (s *Service) ensureIndexes(ctx context.Context, store *archive.Store) bool {
	return retry(ctx, s.cfg.Archive.RetryMinBackoff, s.cfg.Archive.RetryMaxBackoff, func(attempt int) error {
		if err := store.EnsureIndexes(ctx); err != nil {
			return err
		}
		s.indexed.Store(true)
		if attempt > 1 {
			s.log.Info("mongodb indexes ensured", "attempts", attempt)
		}
		return nil
	}, func(attempt int, backoff time.Duration, err error) {
		s.log.Warn("ensuring mongodb indexes failed; retrying", "attempt", attempt, "backoff", backoff, "err", err)
	})
}

// ensureTopics creates the subscription change log (compacted) and, when
// fleetgate creates topics, the inbound and events topics, retrying while
// Kafka is unreachable: the archiver may start before any other service.
// It returns false when ctx was cancelled first.
func (s *Service) ensureTopics(ctx context.Context) (bool, error) {
	adm, err := kafka.NewAdmin(s.cfg.Kafka, s.log)
	if err != nil {
		return false, err
	}
	defer adm.Close()
	topics := []kafka.TopicSpec{{Name: s.cfg.Subscriptions.Topic, Partitions: s.cfg.Subscriptions.Partitions, Compacted: true}}
	if s.cfg.Kafka.CreateTopic {
		topics = append(topics, kafka.TopicSpec{Name: s.cfg.Kafka.Topic, Partitions: s.cfg.Kafka.Partitions})
		if s.cfg.Events.Enabled() {
			topics = append(topics, kafka.TopicSpec{Name: s.cfg.Events.Topic, Partitions: s.cfg.Events.Partitions})
		}
	}
	return retry(ctx, time.Second, 10*time.Second, func(int) error {
		return kafka.EnsureTopics(ctx, adm, s.cfg.Kafka, topics...)
	}, func(attempt int, backoff time.Duration, err error) {
		s.log.Warn("ensuring kafka topics failed; retrying", "brokers", []string(s.cfg.Kafka.Brokers), "attempt", attempt, "backoff", backoff, "err", err)
	}), nil
}
