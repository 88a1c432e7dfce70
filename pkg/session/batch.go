package session

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/workers"
)

// Connect and Disconnect are the session work of every CONNECT and of every
// connection's end, and a delivery round (RunRounds) that of every busy
// session. A reconnect storm brings thousands at once, and one Redis round
// trip each would make Redis read, parse and answer every command on its own
// (and the node wake for each reply). Instead each call joins a Batcher.
const (
	// defaultBatchPipelines is the Batcher's default Max.
	defaultBatchPipelines = 4
	maxBatchCalls         = 256
	// defaultBatchTimeout is the Batcher's default Timeout.
	defaultBatchTimeout = 10 * time.Second
)

// Batcher runs calls of one kind (C) in shared pipelines: up to Max batches
// are in flight at a time, and every call that arrives while they are busy
// waits for the next one, which carries all of them (up to 256) in one
// pipeline. A lone call goes out at once, so an idle store adds no latency;
// an idle Batcher has no goroutine. The zero value with Run set is ready.
type Batcher[C any] struct {
	// Run does the work of calls and sets their results.
	Run func(ctx context.Context, calls []*C)
	// Max is the most batches in flight (default 4).
	Max int
	// Timeout bounds a batch whose callers set no deadline (default
	// 10 s); otherwise it lasts as long as its most patient caller allows.
	Timeout time.Duration
	// Observe, when set, hears the size of each batch.
	Observe func(calls int)

	mu      sync.Mutex
	queue   []*batchCall[C]
	running int
}

// batchCall is one caller's part of a batch: its context, the work (C),
// why it did not run, and a channel closed once the batch is over.
type batchCall[C any] struct {
	ctx  context.Context
	c    *C
	err  error
	done chan struct{}
}

// Do runs c in the next batch and waits for it. It returns ctx's error if
// ctx ended before c ran, or while it ran: then c may have run anyway, and
// the caller must not read it.
func (b *Batcher[C]) Do(ctx context.Context, c *C) error {
	call := &batchCall[C]{ctx: ctx, c: c, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, call)
	start := b.running < cmp.Or(b.Max, defaultBatchPipelines)
	if start {
		b.running++
	}
	b.mu.Unlock()
	if start {
		// On a worker: a loop ends when no call waits, and a new
		// goroutine for each would grow its stack again for the pipeline.
		workers.Go(b.loop)
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop runs batches while calls wait, then ends.
func (b *Batcher[C]) loop() {
	var batch []*batchCall[C]
	var cs []*C
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatchCalls)
		if n == 0 {
			b.running--
			b.queue = nil // let a storm's backing array go
			b.mu.Unlock()
			return
		}
		batch = append(batch[:0], b.queue[:n]...)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()

		// A caller that gave up already is left out.
		cs = cs[:0]
		var deadline time.Time
		live := batch[:0]
		for _, call := range batch {
			if err := call.ctx.Err(); err != nil {
				call.err = err
				close(call.done)
				continue
			}
			d, ok := call.ctx.Deadline()
			if !ok {
				d = time.Now().Add(cmp.Or(b.Timeout, defaultBatchTimeout))
			}
			if d.After(deadline) {
				deadline = d
			}
			cs = append(cs, call.c)
			live = append(live, call)
		}
		if len(cs) > 0 {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			b.Run(ctx, cs)
			cancel()
			if b.Observe != nil {
				b.Observe(len(cs))
			}
		}
		for _, call := range live {
			close(call.done)
		}
		clear(batch)
		clear(cs)
	}
}

// evalAll runs script once per argument set in one pipeline and returns the
// commands in order. A Redis that lost its script cache (restart, failover,
// a new shard) answers NOSCRIPT: the script is loaded and those calls run
// again, once. pre, when set, adds commands to the front of the first
// pipeline (they run before the scripts on a single Redis; on Redis Cluster
// a pipeline runs per shard, in parallel, so put only commands there whose
// order against the scripts does not matter).
func evalAll(ctx context.Context, rdb redis.UniversalClient, script *redis.Script, n int,
	args func(i int) (keys []string, argv []any), pre func(redis.Pipeliner),
) []*redis.Cmd {
	cmds := make([]*redis.Cmd, n)
	pending := make([]int, n)
	for i := range pending {
		pending[i] = i
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		// The pipeline's own error repeats the first command error, which
		// the caller reads per command.
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if pre != nil && attempt == 0 {
				pre(p)
			}
			for _, i := range pending {
				keys, argv := args(i)
				cmds[i] = script.EvalSha(ctx, p, keys, argv...)
			}
			return nil
		})
		var retry []int
		for _, i := range pending {
			if err := cmds[i].Err(); attempt == 0 && err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
				retry = append(retry, i)
			}
		}
		if len(retry) == 0 {
			break
		}
		if err := LoadScript(ctx, rdb, script); err != nil {
			for _, i := range retry {
				cmds[i] = redis.NewCmd(ctx)
				cmds[i].SetErr(errors.Join(errors.New("loading script"), err))
			}
			break
		}
		pending = retry
	}
	return cmds
}

// isCluster says whether rdb spreads keys over shards, so that a pipeline
// does not keep the order of commands on different keys.
func isCluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}
