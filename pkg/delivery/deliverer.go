package delivery

import (
	"log/slog"

	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// Deliverer makes the pumps of a node's connections and carries their
// store rounds in shared pipelines. It is safe for concurrent use.
type Deliverer struct {
	cfg     Config
	store   *session.Store
	events  *events.Emitter
	log     *slog.Logger
	metrics *metrics
	rounds  *rounds
	sweep   ackSweep
}

// New returns a Deliverer writing to the sessions in store; events, when
// not nil, receives the delivery receipts. It does no I/O.
func New(cfg Config, store *session.Store, ev *events.Emitter, log *slog.Logger, mp metric.MeterProvider) (*Deliverer, error) {
	m, err := newMetrics(mp)
	if err != nil {
		return nil, err
	}
	return &Deliverer{
		cfg:     cfg,
		store:   store,
		events:  ev,
		log:     log.With("component", "delivery"),
		metrics: m,
		rounds:  newRounds(store, cfg.StorePipelines, cfg.StoreTimeout, m.observePipeline),
		sweep:   ackSweep{delay: cfg.AckDelay, observe: m.observeSweep},
	}, nil
}
