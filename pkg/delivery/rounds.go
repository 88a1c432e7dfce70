package delivery

import (
	"context"
	"time"

	"github.com/fleetgate/fleetgate/pkg/session"
)

// rounds carries the delivery rounds of the node's sessions to the session
// store in shared pipelines (session.Batcher over Store.RunRounds). Each
// pump hands its round (acknowledgements to record, messages to take) to do
// and waits; up to delivery.store-pipelines pipelines are in flight, and
// every round that arrives while they are busy waits for the next one.
// Under load, one Redis round trip then serves the rounds of many sessions
// instead of one each: fewer system calls on the node and far less
// per-command work in Redis. An idle node has no goroutine here.
type rounds struct {
	b session.Batcher[session.Round]
}

func newRounds(store *session.Store, max int, timeout time.Duration, size func(n int)) *rounds {
	return &rounds{b: session.Batcher[session.Round]{Run: store.RunRounds, Max: max, Timeout: timeout, Observe: size}}
}

// do runs r in the next pipeline and returns r.Err, or ctx's error if ctx
// ends first: then r may still run (its acknowledgements are recorded, the
// messages it takes stay in flight for the next connection), and the caller
// must not read r.
func (p *rounds) do(ctx context.Context, r *session.Round) error {
	if err := p.b.Do(ctx, r); err != nil {
		return err
	}
	return r.Err
}
