package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ErrFailover is a Barrier's answer when the Redis primaries, or their
// replication IDs, changed between a caller's Mark and the round that
// would have confirmed its writes: a replica was promoted or a primary
// restarted, and the writes may be gone with the primary that took them.
var ErrFailover = errors.New("redis primaries changed before the writes were confirmed replicated")

// BarrierResult says what a Barrier round learnt of a caller's writes.
type BarrierResult int

const (
	// Replicated: every primary's needed replicas acknowledged a marker
	// written after the caller's writes.
	Replicated BarrierResult = iota
	// NotNeeded: no primary had a replica (a single Redis), or the
	// servers refuse INFO replication; nothing was waited for.
	NotNeeded
	// Short: a primary had fewer replicas connected than it needs, or
	// fewer acknowledged within the timeout; the caller goes on without.
	Short
)

func (r BarrierResult) String() string {
	switch r {
	case Replicated:
		return "replicated"
	case NotNeeded:
		return "not_needed"
	case Short:
		return "short"
	}
	return fmt.Sprintf("BarrierResult(%d)", int(r))
}

// Barrier lets writers wait, together, until the replicas of the Redis
// primaries hold what they wrote: the SUBACK of a subscription waits for
// it, so that a replica promoted after its primary died has the
// subscription the device was told it has. Callers that arrive while a
// round runs share the next one (a group commit): rounds run back to back
// while anyone waits, and their cost is per round, not per caller.
//
// When the last round found no primary with a replica to wait for, a
// caller within quiet of it returns at once (NotNeeded): a single Redis
// costs nothing but a round per quiet.
//
// A caller takes a Mark before it writes and waits with it after: the
// round that confirms its writes must find the primaries Mark saw, or
// the writes may have gone to a primary that is gone (ErrFailover).
type Barrier struct {
	rep   *Replication
	quiet time.Duration

	mu       sync.Mutex
	running  bool
	next     *round            // the round the next caller joins
	identity map[string]string // the last round's primaries: address -> replication ID
	idleTill time.Time         // no replica to wait for until then
	lastAll  time.Time         // when a round last asked every primary
	last     []Primary         // the last round's answers
}

// Mark is what a caller saw of the primaries before it wrote.
type Mark struct {
	identity map[string]string
}

// round is one round and the callers waiting for it.
type round struct {
	done chan struct{}
	// keys are the callers' keys: the round asks the primaries that hold
	// them; all is set by a caller without a key, and every quiet.
	keys  map[string]struct{}
	all   bool
	prims []Primary
	err   error
}

// Waiter is a caller's place in a round.
type Waiter struct {
	r    *round // nil: resolved without a round
	mark Mark
}

// NewBarrier returns a Barrier over rep's rounds; quiet is how long a
// round that found no replica to wait for stands for.
func NewBarrier(rep *Replication, quiet time.Duration) *Barrier {
	return &Barrier{rep: rep, quiet: quiet}
}

// Mark returns what the barrier last saw of the primaries; take it before
// the writes a later Join waits for.
func (b *Barrier) Mark() Mark {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Mark{identity: b.identity}
}

// Join joins the next round, which begins after the call and so covers
// every write the caller made before it to the primary that holds key (a
// key the caller wrote; "" asks every primary). It does not block.
func (b *Barrier) Join(m Mark, key string) *Waiter {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Now().Before(b.idleTill) && maps.Equal(m.identity, b.identity) {
		return &Waiter{mark: m}
	}
	if b.next == nil {
		b.next = &round{done: make(chan struct{}), keys: map[string]struct{}{}}
	}
	if key == "" {
		b.next.all = true
	} else {
		b.next.keys[key] = struct{}{}
	}
	if !b.running {
		b.running = true
		go b.rounds()
	}
	return &Waiter{r: b.next, mark: m}
}

// JoinSession is Join for the writes to clientID's session, whose keys
// share one slot.
func (b *Barrier) JoinSession(m Mark, clientID string) *Waiter {
	return b.Join(m, sessionKey(clientID))
}

// Wait waits for the caller's round and says what it found: an error when
// a primary did not answer or the primaries changed since the caller's
// Mark (ErrFailover); otherwise Replicated, NotNeeded or Short.
func (p *Waiter) Wait(ctx context.Context) (BarrierResult, error) {
	if p.r == nil {
		return NotNeeded, nil
	}
	select {
	case <-p.r.done:
	case <-ctx.Done():
		return Short, ctx.Err()
	}
	if p.r.err != nil {
		return Short, p.r.err
	}
	if p.mark.identity != nil {
		// Each primary the round asked must be one the mark saw, with the
		// same replication ID: a promoted replica answers from another
		// address, a restarted primary with another ID.
		for _, pr := range p.r.prims {
			if id, ok := p.mark.identity[pr.Addr]; !ok || id != pr.ReplID {
				return Short, fmt.Errorf("%w (before %s, now %s)", ErrFailover, DescribeIdentity(p.mark.identity), DescribeIdentity(Identity(p.r.prims)))
			}
		}
	}
	res := NotNeeded
	for _, pr := range p.r.prims {
		switch {
		case !pr.Confirmed():
			return Short, nil
		case pr.Needed > 0:
			res = Replicated
		}
	}
	return res, nil
}

// Primaries returns what the caller's round found of each primary, for a
// log line; nil before Wait returned or when no round ran.
func (p *Waiter) Primaries() []Primary {
	if p.r == nil {
		return nil
	}
	select {
	case <-p.r.done:
		return p.r.prims
	default:
		return nil
	}
}

// Round runs one round now, outside any caller's wait (at start, to learn
// the primaries), and returns what each primary said.
func (b *Barrier) Round(ctx context.Context) ([]Primary, error) {
	p := b.Join(Mark{}, "")
	if p.r == nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.last, nil
	}
	select {
	case <-p.r.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.r.prims, p.r.err
}

// rounds runs rounds back to back while callers join them.
func (b *Barrier) rounds() {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		all := r.all || time.Since(b.lastAll) >= b.quiet
		keys := make([]string, 0, len(r.keys))
		if !all {
			for k := range r.keys {
				keys = append(keys, k)
			}
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), b.rep.timeout+5*time.Second)
		r.prims, r.err = b.rep.RoundFor(ctx, keys)
		cancel()
		if r.err == nil {
			r.err = RoundError(r.prims)
		}
		b.mu.Lock()
		switch {
		case r.err != nil:
			// Unknown primaries: the next caller's round tells.
			b.idleTill = time.Time{}
		case all:
			b.identity = Identity(r.prims)
			b.last = r.prims
			b.lastAll = time.Now()
			b.idleTill = time.Time{}
			if !waitsForAny(r.prims) {
				b.idleTill = b.lastAll.Add(b.quiet)
			}
		default:
			id := maps.Clone(b.identity)
			if id == nil {
				id = map[string]string{}
			}
			maps.Copy(id, Identity(r.prims))
			b.identity = id
		}
		b.mu.Unlock()
		close(r.done)
	}
}

// waitsForAny reports whether a round waited, or would have waited, for a
// replica of any primary.
func waitsForAny(prims []Primary) bool {
	for _, p := range prims {
		if p.Needed > 0 {
			return true
		}
	}
	return false
}

// RoundError joins the errors of the primaries that failed a round; nil
// when every one answered.
func RoundError(prims []Primary) error {
	var errs []error
	for _, p := range prims {
		if p.Err != nil {
			errs = append(errs, fmt.Errorf("redis %s: %w", p.Addr, p.Err))
		}
	}
	if len(prims) == 0 {
		errs = append(errs, errors.New("no redis primary found"))
	}
	return errors.Join(errs...)
}

// Identity maps the primaries of a round to their replication IDs: two
// rounds with another identity have another set of primaries, or one of
// them restarted or was promoted in between.
func Identity(prims []Primary) map[string]string {
	id := make(map[string]string, len(prims))
	for _, p := range prims {
		id[p.Addr] = p.ReplID
	}
	return id
}

// DescribeIdentity renders an Identity for a log line, sorted.
func DescribeIdentity(id map[string]string) string {
	parts := make([]string, 0, len(id))
	for addr, replID := range id {
		parts = append(parts, addr+"="+replID)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// DescribePrimaries renders a round's primaries for a log line, each with
// its replicas, and reports whether any is waited for.
func DescribePrimaries(prims []Primary) (desc string, waits bool) {
	parts := make([]string, 0, len(prims))
	for _, p := range prims {
		if p.NoReplicationInfo {
			parts = append(parts, p.Addr+" (replication unknown)")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%d replicas connected, waiting for %d)", p.Addr, p.Connected, p.Needed))
		waits = waits || p.Needed > 0
	}
	return strings.Join(parts, ", "), waits
}

// WaitReport counts what the waits of one kind of answer found (SUBACKs,
// CONNACKs of new sessions) by result — replicated, not_needed, short,
// failed, failover — and logs, at most every 10 s, answers that went out
// before the replicas confirmed them.
type WaitReport struct {
	counter   metric.Int64Counter
	results   map[string]metric.AddOption
	log       *slog.Logger
	short     string
	lastShort atomic.Int64 // unix nanoseconds of the last short-wait log line
}

// NewWaitReport returns a report that adds to counter and logs shortMsg
// (with the primary that fell short) to log.
func NewWaitReport(counter metric.Int64Counter, log *slog.Logger, shortMsg string) *WaitReport {
	r := &WaitReport{counter: counter, results: map[string]metric.AddOption{}, log: log, short: shortMsg}
	for _, res := range []string{Replicated.String(), NotNeeded.String(), Short.String(), "failed", "failover"} {
		r.results[res] = metric.WithAttributes(attribute.String("result", res))
	}
	return r
}

// Wait waits for w (nil: nothing to wait for), counts what it found and
// returns why the write cannot be taken as kept: a primary that did not
// answer, or a failover since the write. A short wait (a replica away or
// slow) returns nil, counted and logged.
func (r *WaitReport) Wait(ctx context.Context, w *Waiter) error {
	if w == nil {
		return nil
	}
	res, err := w.Wait(ctx)
	switch {
	case err != nil && errors.Is(err, ErrFailover):
		r.counter.Add(ctx, 1, r.results["failover"])
	case err != nil:
		r.counter.Add(ctx, 1, r.results["failed"])
	default:
		r.counter.Add(ctx, 1, r.results[res.String()])
		if res == Short {
			r.logShort(w.Primaries())
		}
		return nil
	}
	return fmt.Errorf("waiting for the redis replicas: %w", err)
}

func (r *WaitReport) logShort(prims []Primary) {
	now := time.Now().UnixNano()
	last := r.lastShort.Load()
	if now-last < int64(10*time.Second) || !r.lastShort.CompareAndSwap(last, now) {
		return
	}
	for _, p := range prims {
		if !p.Confirmed() {
			r.log.Warn(r.short, "server", p.Addr, "acked", p.Acked, "needed", p.Needed, "connected", p.Connected)
			return
		}
	}
}
