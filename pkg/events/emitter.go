package events

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Config configures the events a frontend emits.
type Config struct {
	// Topic is the Kafka topic of session events and receipts; empty turns
	// them off.
	Topic string `yaml:"topic"`
	// Partitions is the partition count when fleetgate creates Topic.
	Partitions int `yaml:"partitions"`
	// Receipts turns delivery receipts on: one record per completed QoS 1
	// or 2 delivery, as many records as deliveries.
	Receipts bool `yaml:"receipts"`
}

// RegisterFlags registers the flags under "events.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Topic, "events.topic", "mqtt.events", "Kafka topic of session events (connect, disconnect, subscribe, unsubscribe) and delivery receipts; empty turns them off.")
	fs.IntVar(&c.Partitions, "events.partitions", 12, "Partitions of the events topic when fleetgate creates it; records are keyed by client id.")
	fs.BoolVar(&c.Receipts, "events.receipts", true, "Emit a delivery receipt for every QoS 1 and 2 delivery a subscriber completes (one record per delivery).")
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	if c.Topic != "" && c.Partitions < 1 {
		return fmt.Errorf("events.partitions: %d must be at least 1", c.Partitions)
	}
	return nil
}

// Enabled reports whether events are emitted at all.
func (c Config) Enabled() bool { return c.Topic != "" }

// Emitter produces events without waiting for Kafka. A nil *Emitter emits
// nothing, so callers need no checks when events are off.
type Emitter struct {
	cl   *kgo.Client
	cfg  Config
	node string
	log  *slog.Logger
	// emitted counts per Kind (series kindIndex, the last for any other
	// Kind), summed atomically and read when the meter collects (an
	// observable counter): a receipt is emitted per delivery, and a
	// synchronous counter's Add resolved its attributes at every call. A
	// contract package, it keeps to the OpenTelemetry API rather than
	// pkg/telemetry's HotCounter.
	emitted  [len(series)]atomic.Int64
	failed   metric.Int64Counter
	attrs    map[Kind]metric.MeasurementOption
	lastWarn atomic.Int64
	promise  func(*kgo.Record, error) // produced, bound once
}

// series are the series of fleetgate_events_emitted: one per Kind, and a
// last one, event="other", where an event of any other Kind (none is
// emitted) would count.
var series = [...]Kind{Connect, Disconnect, Subscribe, Unsubscribe, Delivered, "other"}

// kindIndex is the series of the kind k (a record's fg.event header).
func kindIndex(k []byte) int {
	for i, s := range series[:len(series)-1] {
		if string(k) == string(s) {
			return i
		}
	}
	return len(series) - 1
}

// NewEmitter returns an Emitter producing through cl (the frontend's
// producer; records name their topic) for node, or nil when cfg turns events
// off.
func NewEmitter(cl *kgo.Client, cfg Config, node string, log *slog.Logger, mp metric.MeterProvider) (*Emitter, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/events")
	sets := make([]attribute.Set, len(series))
	for i, k := range series {
		sets[i] = attribute.NewSet(attribute.String("event", string(k)))
	}
	e := &Emitter{cl: cl, cfg: cfg, node: node, log: log.With("component", "events"), attrs: map[Kind]metric.MeasurementOption{}}
	e.promise = e.produced
	for i, k := range series[:len(series)-1] {
		e.attrs[k] = metric.WithAttributeSet(sets[i])
	}
	_, err := m.Int64ObservableCounter("fleetgate_events_emitted", metric.WithDescription("Session events and delivery receipts acknowledged by Kafka, by event."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for i := range sets {
				o.Observe(e.emitted[i].Load(), metric.WithAttributeSet(sets[i]))
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	if e.failed, err = m.Int64Counter("fleetgate_events_failed", metric.WithDescription("Session events and delivery receipts Kafka did not take (lost), by event.")); err != nil {
		return nil, err
	}
	return e, nil
}

// Receipts reports whether delivery receipts are wanted.
func (e *Emitter) Receipts() bool { return e != nil && e.cfg.Receipts }

// Emit produces ev asynchronously, filling in the node and, if unset, the
// time. A failure is counted and logged (at most once a second), never
// returned: events do not hold up the MQTT flow.
func (e *Emitter) Emit(ev *Event) {
	if e == nil {
		return
	}
	ev.Node = e.node
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	r, err := Encode(e.cfg.Topic, ev)
	if err != nil {
		e.fail(ev.Kind, ev.ClientID, err)
		return
	}
	// TryProduce: while Kafka is away and the buffer is full the event fails
	// at once; it never blocks the connection that caused it. The promise
	// is made once (NewEmitter) and reads the kind and the client id off
	// the record, so an event costs no closure.
	e.cl.TryProduce(context.Background(), r, e.promise)
}

// produced is the promise of every event: it counts what Kafka took, by
// the record's fg.event header, and reports what it did not.
func (e *Emitter) produced(r *kgo.Record, err error) {
	var kind []byte
	for _, h := range r.Headers {
		if h.Key == HeaderEvent {
			kind = h.Value
			break
		}
	}
	if err != nil {
		e.fail(Kind(kind), string(r.Key), err)
		return
	}
	e.emitted[kindIndex(kind)].Add(1)
}

func (e *Emitter) fail(kind Kind, clientID string, err error) {
	if attr := e.attrs[kind]; attr != nil {
		e.failed.Add(context.Background(), 1, attr)
	} else {
		e.failed.Add(context.Background(), 1)
	}
	now := time.Now().UnixNano()
	last := e.lastWarn.Load()
	if now-last >= int64(time.Second) && e.lastWarn.CompareAndSwap(last, now) {
		level := slog.LevelWarn
		if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
			level = slog.LevelDebug
		}
		e.log.Log(context.Background(), level, "event not produced (counted in fleetgate_events_failed; further failures within a second are not logged)",
			"event", kind, "client_id", clientID, "err", err)
	}
}
