package telemetry

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Counters creates the Int64 counters of one meter and keeps their
// errors, so that a metrics constructor declares its counters in one
// expression and checks Err once.
type Counters struct {
	meter metric.Meter
	errs  []error
}

// NewCounters returns a Counters of m.
func NewCounters(m metric.Meter) *Counters { return &Counters{meter: m} }

// New creates the counter name with its description.
func (c *Counters) New(name, desc string) metric.Int64Counter {
	ctr, err := c.meter.Int64Counter(name, metric.WithDescription(desc))
	c.errs = append(c.errs, err)
	return ctr
}

// Err is every error New met, joined; nil when there was none.
func (c *Counters) Err() error { return errors.Join(c.errs...) }

// HotCounter is an Int64 counter for paths taken per message: Add is one
// atomic addition, and the meter reads the sums when it collects (an
// observable counter). A synchronous counter's Add built its options,
// resolved its attribute set in a map and offered an exemplar at every
// call: 6 % of the frontend's CPU in the closed-loop pairs benchmark.
// Its series exist, at 0, from the start.
type HotCounter struct {
	sums []paddedInt64
}

// paddedInt64 keeps each sum on a cache line of its own, so that counting
// one series does not contend with counting its neighbour.
type paddedInt64 struct {
	atomic.Int64
	_ [56]byte
}

// Hot creates the counter name with its description and one series per
// attribute set of sets (a single series without attributes when there
// are none): AddAt(i, n) adds to the series of sets[i].
func (c *Counters) Hot(name, desc string, sets ...attribute.Set) *HotCounter {
	h := &HotCounter{sums: make([]paddedInt64, max(1, len(sets)))}
	_, err := c.meter.Int64ObservableCounter(name, metric.WithDescription(desc),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if len(sets) == 0 {
				o.Observe(h.sums[0].Load())
				return nil
			}
			for i := range sets {
				o.Observe(h.sums[i].Load(), metric.WithAttributeSet(sets[i]))
			}
			return nil
		}))
	c.errs = append(c.errs, err)
	return h
}

// QoSSets are the attribute sets of a counter by QoS (qos 0, 1, 2), in that
// order: HotCounter.AddAt(int(qos), n).
func QoSSets() []attribute.Set {
	return []attribute.Set{attribute.NewSet(attribute.Int("qos", 0)), attribute.NewSet(attribute.Int("qos", 1)), attribute.NewSet(attribute.Int("qos", 2))}
}

// Add adds n to the counter's first (or only) series.
func (h *HotCounter) Add(n int64) { h.sums[0].Add(n) }

// AddAt adds n to the series of the i-th attribute set.
func (h *HotCounter) AddAt(i int, n int64) { h.sums[i].Add(n) }

// Value is the sum of the i-th series.
func (h *HotCounter) Value(i int) int64 { return h.sums[i].Load() }
