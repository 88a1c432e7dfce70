package delivery

import (
	"context"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/pkg/session"
)

// maxPipelineRounds bounds the session rounds of one Redis pipeline.
const maxPipelineRounds = 256

// rounds carries the delivery rounds of the node's sessions to the session
// store in shared pipelines. Each pump hands its round (acknowledgements
// to record, messages to take) to do and waits; up to max pipelines are in
// flight, and every round that arrives while they are busy waits for the
// next one. Under load, one Redis round trip then serves the rounds of many
// sessions instead of one each: fewer system calls on the node and far less
// per-command work in Redis. An idle node has no goroutine here.
type rounds struct {
	store   *session.Store
	max     int
	timeout time.Duration
	size    func(n int) // observes the rounds of each pipeline

	mu      sync.Mutex
	queue   []*roundCall
	running int
}

type roundCall struct {
	ctx  context.Context
	r    *session.Round
	done chan struct{}
}

func newRounds(store *session.Store, max int, timeout time.Duration, size func(int)) *rounds {
	return &rounds{store: store, max: max, timeout: timeout, size: size}
}

// do runs r in the next pipeline and returns r.Err, or ctx's error if ctx
// ends first: then r may still run (its acknowledgements are recorded, the
// messages it takes stay in flight for the next connection), and the caller
// must not read r.
func (p *rounds) do(ctx context.Context, r *session.Round) error {
	call := &roundCall{ctx: ctx, r: r, done: make(chan struct{})}
	p.mu.Lock()
	p.queue = append(p.queue, call)
	start := p.running < p.max
	if start {
		p.running++
	}
	p.mu.Unlock()
	if start {
		go p.run()
	}
	select {
	case <-call.done:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run sends pipelines while rounds wait, then ends.
func (p *rounds) run() {
	var batch []*roundCall
	var rs []*session.Round
	for {
		p.mu.Lock()
		n := min(len(p.queue), maxPipelineRounds)
		if n == 0 {
			p.running--
			p.queue = nil // let a burst's backing array go
			p.mu.Unlock()
			return
		}
		batch = append(batch[:0], p.queue[:n]...)
		rest := copy(p.queue, p.queue[n:])
		clear(p.queue[rest:])
		p.queue = p.queue[:rest]
		p.mu.Unlock()

		rs = rs[:0]
		live := batch[:0]
		for _, c := range batch {
			if err := c.ctx.Err(); err != nil {
				// The connection ended while its round waited: nothing
				// to do for it (its pump returns, or already did).
				c.r.Taken, c.r.Err = nil, err
				close(c.done)
				continue
			}
			rs = append(rs, c.r)
			live = append(live, c)
		}
		if len(rs) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
			p.store.RunRounds(ctx, rs)
			cancel()
			p.size(len(rs))
		}
		for _, c := range live {
			close(c.done)
		}
		clear(batch)
		clear(rs)
	}
}
