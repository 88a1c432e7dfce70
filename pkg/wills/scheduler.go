package wills

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// WillStore is where a node's wills wait: ClaimWill takes a will once,
// fenced by the connection epoch, and EndWithWill also ends the session
// (session.Store).
type WillStore interface {
	ClaimWill(ctx context.Context, clientID string, epoch uint64) (*session.Will, error)
	EndWithWill(ctx context.Context, clientID string, epoch uint64) (*session.Will, session.Ended, error)
}

// AsyncProducer hands records to Kafka without waiting for them; a
// *kgo.Client made by kafka.NewProducer (acks=all, idempotent) is one.
type AsyncProducer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	TryProduce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// Scheduler publishes the wills of one frontend's own clients: at once when
// a connection ends without DISCONNECT, or after the Will Delay Interval
// [MQTT-3.1.3-9]. The will waits in the session store meanwhile, so that if
// the node dies before the delay is over, a dispatcher's Sweeper publishes
// it instead; a client that reconnects in time fences the claim. Safe for
// concurrent use.
type Scheduler struct {
	store    WillStore
	producer AsyncProducer // nil drops wills (tests)
	topic    string
	node     string
	timeout  time.Duration
	log      *slog.Logger
	// published and failed count this node's wills written to Kafka and
	// lost (not claimed, or not written).
	published, failed metric.Int64Counter

	closed atomic.Bool
	mu     sync.Mutex
	jobs   map[string]*job // delayed wills by client id; guarded by mu
}

// job is a will waiting for its delay.
type job struct {
	timer *time.Timer
	epoch uint64
}

// NewScheduler returns a Scheduler that claims wills from store and
// produces them to kafkaTopic as node's records (Record), each store and
// Kafka call of a delayed will bounded by timeout. A nil producer drops
// the wills (tests). No I/O.
func NewScheduler(store WillStore, producer AsyncProducer, kafkaTopic, node string, timeout time.Duration, log *slog.Logger,
	mp metric.MeterProvider) (*Scheduler, error) {
	counters := telemetry.NewCounters(mp.Meter("github.com/fleetgate/fleetgate/pkg/wills/scheduler"))
	s := &Scheduler{store: store, producer: producer, topic: kafkaTopic, node: node, timeout: timeout,
		log: log.With("component", "wills"), jobs: map[string]*job{},
		// The frontend's metric names, kept from when the delivery hook
		// scheduled wills.
		published: counters.New("fleetgate_delivery_wills_published", "Wills written to Kafka by this node."),
		failed:    counters.New("fleetgate_delivery_wills_failed", "Wills this node could not claim or write."),
	}
	if err := counters.Err(); err != nil {
		return nil, fmt.Errorf("creating will metrics: %w", err)
	}
	return s, nil
}

// Publish produces w, a will the caller already claimed, and waits until
// Kafka answered for it or ctx ends, whichever comes first. The produce
// goes on after ctx ends: a claimed will is nowhere else, so only Kafka's
// answer (or, for a record not sent yet, the producer's delivery timeout)
// settles it, and the outcome is counted and logged then. A broker that
// took the request and stopped answering (a frozen process: kgo's
// ProduceSync then waits past any context, kafka.ProduceWait) thus holds
// the will, not the caller.
func (s *Scheduler) Publish(ctx context.Context, clientID string, protocol byte, w *session.Will) {
	if s.producer == nil {
		return
	}
	select {
	case <-s.produce(ctx, clientID, protocol, w):
	case <-ctx.Done():
		s.log.Warn("will not acknowledged by kafka in time; its produce goes on, and its outcome is logged when kafka answers",
			"client_id", clientID, "topic", w.Topic, "err", context.Cause(ctx))
	}
}

// PublishNoWait starts producing w, a will the caller already claimed,
// and returns; the outcome is counted and logged as Publish's. A CONNECT
// that took a session over publishes the will of the connection it ended
// so, and is answered without waiting for Kafka: the will goes to the
// same producer with the same key, the client id, as everything the new
// connection publishes, so Kafka still has it first.
func (s *Scheduler) PublishNoWait(ctx context.Context, clientID string, protocol byte, w *session.Will) {
	if s.producer != nil {
		s.produce(ctx, clientID, protocol, w)
	}
}

// produce hands w's record to the producer before it returns, unless the
// producer's buffer is full (Kafka slow or away while publishes fill it:
// the record then waits for room on a goroutine of its own, not on the
// caller), and returns a channel closed once Kafka answered for it, after
// its outcome was counted and logged. The produce does not end with ctx:
// only Kafka's answer or the producer's delivery timeout settle a will.
func (s *Scheduler) produce(ctx context.Context, clientID string, protocol byte, w *session.Will) <-chan struct{} {
	ctx = context.WithoutCancel(ctx)
	done := make(chan struct{})
	settle := func(_ *kgo.Record, err error) {
		defer close(done)
		if err != nil {
			s.failed.Add(ctx, 1)
			s.log.Error("will claimed but not written to kafka: it is lost", "client_id", clientID, "topic", w.Topic, "err", err)
			return
		}
		s.published.Add(ctx, 1)
	}
	s.producer.TryProduce(ctx, Record(s.topic, clientID, s.node, protocol, w, time.Now()), func(r *kgo.Record, err error) {
		if errors.Is(err, kgo.ErrMaxBuffered) {
			go s.producer.Produce(ctx, r, settle)
			return
		}
		settle(r, err)
	})
	return done
}

// ClaimAndPublish takes the will of the connection epoch from the store
// (once; not at all after a reconnect) and produces it.
func (s *Scheduler) ClaimAndPublish(ctx context.Context, clientID string, epoch uint64, protocol byte) {
	w, err := s.store.ClaimWill(ctx, clientID, epoch)
	if err != nil {
		if !errors.Is(err, session.ErrFenced) && !errors.Is(err, session.ErrNoSession) {
			s.failed.Add(ctx, 1)
			s.log.Warn("will not claimed; the wills sweeper publishes it if this node dies", "client_id", clientID, "err", err)
		}
		return
	}
	if w != nil {
		s.Publish(ctx, clientID, protocol, w)
	}
}

// endAndPublish ends the session of the connection epoch at its expiry and
// publishes its will: the session's end ends the will's delay
// [MQTT-3.1.3-9].
func (s *Scheduler) endAndPublish(ctx context.Context, clientID string, epoch uint64, protocol byte,
	ended func(ctx context.Context, e session.Ended)) {
	w, e, err := s.store.EndWithWill(ctx, clientID, epoch)
	if err != nil {
		if !errors.Is(err, session.ErrFenced) && !errors.Is(err, session.ErrNoSession) {
			s.failed.Add(ctx, 1)
			s.log.Warn("expired session not ended: its will is lost unless the client connects again before Redis drops the session",
				"client_id", clientID, "hold", session.WillHold, "err", err)
		}
		return
	}
	if w != nil {
		s.Publish(ctx, clientID, protocol, w)
	}
	if len(e.Subscriptions) > 0 || len(e.Shared) > 0 {
		ended(ctx, e)
	}
}

// Schedule claims and publishes the will of the connection epoch after d,
// unless Cancel or a later Schedule for the client comes first. With ended
// set, d is the session's expiry, which comes before the will's delay: the
// session is ended with the claim (WillStore.EndWithWill) and ended is
// called with what it held: its subscriptions, for their tombstones, and
// its shared subscriptions' undelivered messages, for another member.
func (s *Scheduler) Schedule(clientID string, epoch uint64, protocol byte, d time.Duration,
	ended func(ctx context.Context, e session.Ended)) {
	if s.closed.Load() {
		return // shutting down: the wills sweeper takes it over
	}
	j := &job{epoch: epoch}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.jobs[clientID]; old != nil {
		old.timer.Stop()
	}
	s.jobs[clientID] = j
	j.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		if s.jobs[clientID] == j {
			delete(s.jobs, clientID)
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		defer cancel()
		if ended == nil {
			s.ClaimAndPublish(ctx, clientID, epoch, protocol)
			return
		}
		s.endAndPublish(ctx, clientID, epoch, protocol, ended)
	})
}

// Cancel drops the delayed will of clientID, if any: the client connected
// again.
func (s *Scheduler) Cancel(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[clientID]; j != nil {
		j.timer.Stop()
		delete(s.jobs, clientID)
	}
}

// Close stops scheduling; the delayed wills stay in the session store for
// the wills sweeper, which publishes them once this node's liveness lapses.
func (s *Scheduler) Close() {
	s.closed.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, j := range s.jobs {
		j.timer.Stop()
		delete(s.jobs, id)
	}
}
