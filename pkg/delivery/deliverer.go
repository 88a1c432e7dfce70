package delivery

import (
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// Deliverer makes the pumps of a node's connections and carries their
// store rounds in shared pipelines. It is safe for concurrent use.
type Deliverer struct {
	cfg     Config
	authz   Authorizer // nil: every message may be read
	store   *session.Store
	events  *events.Emitter
	log     *slog.Logger
	metrics *metrics
	rounds  *rounds
	sweep   ackSweep
}

// Authorizer decides, for every message a Deliverer writes, whether the
// subscriber may still read its topic. A SUBSCRIBE is authorized when it
// is made; asking again per message makes a reload of the rules that takes
// a topic away stop its deliveries at once, also through subscriptions
// granted before the reload, and through a persistent session's
// subscriptions granted on an earlier connection.
type Authorizer interface {
	// AllowRead reports whether cl may receive a message published to
	// topic. known is false when cl's access is not known (its connection
	// ended): the message is then neither written nor discarded, and stays
	// in flight for the session's next connection.
	AllowRead(cl *mqtt.Client, topic string) (allow, known bool)
}

// SetAuthorizer makes d ask a for every message it writes. Call it before
// the first Open.
func (d *Deliverer) SetAuthorizer(a Authorizer) { d.authz = a }

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
