package telemetry

import (
	"errors"

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
