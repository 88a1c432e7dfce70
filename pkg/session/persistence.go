package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Persistence is what one Redis primary does with the writes it
// acknowledged. After a dispatcher committed its Kafka offsets, the
// messages queued for offline sessions and the inflight ones exist only in
// Redis: a primary that does not write them to its append-only file before
// it answers loses them when it crashes (docs/operations.md, "Redis
// persistence").
type Persistence struct {
	// Addr is the primary's address as the client reaches it.
	Addr string
	// AOF: the append-only file is on (appendonly yes).
	AOF bool
	// Fsync is appendfsync (always, everysec, no), "" when the server does
	// not let CONFIG GET read it (managed services rename or disable
	// CONFIG; INFO tells AOF only).
	Fsync string
}

// Durable reports whether a write the primary acknowledged survives a crash
// of its machine: the append-only file is on with appendfsync always.
func (p Persistence) Durable() bool { return p.AOF && p.Fsync == "always" }

// Known reports whether Fsync could be read.
func (p Persistence) Known() bool { return p.Fsync != "" }

// String describes the setting for a log line.
func (p Persistence) String() string {
	switch {
	case !p.AOF:
		return "appendonly no"
	case !p.Known():
		return "appendonly yes, appendfsync unknown (CONFIG GET refused)"
	default:
		return "appendonly yes, appendfsync " + p.Fsync
	}
}

// CheckPersistence asks every primary of rdb (each master of a Redis
// Cluster) for its persistence settings, with CONFIG GET, or INFO
// persistence where CONFIG is refused. The result is sorted by address; an
// error names the primaries that could not be asked.
func CheckPersistence(ctx context.Context, rdb redis.UniversalClient) ([]Persistence, error) {
	var (
		mu   sync.Mutex
		out  []Persistence
		errs []error
	)
	check := func(ctx context.Context, c *redis.Client) error {
		p, err := persistenceOf(ctx, c)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("redis %s: %w", c.Options().Addr, err))
			return nil // ask the other primaries
		}
		out = append(out, p)
		return nil
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, check)
	case *redis.Client:
		err = check(ctx, c)
	default:
		err = fmt.Errorf("redis: cannot list the primaries of a %T", rdb)
	}
	slices.SortFunc(out, func(a, b Persistence) int { return strings.Compare(a.Addr, b.Addr) })
	return out, errors.Join(append(errs, err)...)
}

func persistenceOf(ctx context.Context, c *redis.Client) (Persistence, error) {
	p := Persistence{Addr: c.Options().Addr}
	vals, err := c.ConfigGet(ctx, "append*").Result()
	if err == nil {
		if v, ok := vals["appendonly"]; ok {
			p.AOF, p.Fsync = v == "yes", vals["appendfsync"]
			return p, nil
		}
	}
	// CONFIG refused (renamed, disabled by a managed service, or an ACL):
	// INFO persistence says whether the append-only file is on.
	info, ierr := c.Info(ctx, "persistence").Result()
	if ierr != nil {
		return p, errors.Join(err, ierr)
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "aof_enabled:"); ok {
			p.AOF = v == "1"
			return p, nil
		}
	}
	return p, errors.Join(err, errors.New("INFO persistence has no aof_enabled"))
}

// PersistenceWatch checks the Redis primaries' persistence when it starts
// and then every interval, logs a warning for each primary that is not
// durable (when first seen so, and when its setting changes) and reports
// fleetgate_redis_durable.
type PersistenceWatch struct {
	rdb      redis.UniversalClient
	log      *slog.Logger
	interval time.Duration

	mu   sync.Mutex
	last map[string]Persistence // by address: the latest check
}

// NewPersistenceWatch registers fleetgate_redis_durable with mp; Run checks.
func NewPersistenceWatch(rdb redis.UniversalClient, log *slog.Logger, mp metric.MeterProvider, interval time.Duration) (*PersistenceWatch, error) {
	w := &PersistenceWatch{rdb: rdb, log: log, interval: interval}
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/session")
	_, err := m.Int64ObservableGauge("fleetgate_redis_durable",
		metric.WithDescription("1 when the Redis primary (server) writes each change to its append-only file before it answers (appendonly yes, appendfsync always), so that messages queued for offline sessions survive a crash of its machine; 0 otherwise (appendfsync is in the fsync attribute, \"unknown\" where CONFIG GET is refused). Checked at start and every minute."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, p := range w.last {
				fsync := p.Fsync
				switch {
				case !p.AOF:
					fsync = "off"
				case fsync == "":
					fsync = "unknown"
				}
				v := int64(0)
				if p.Durable() {
					v = 1
				}
				o.Observe(v, metric.WithAttributes(attribute.String("server", p.Addr), attribute.String("fsync", fsync)))
			}
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("creating fleetgate_redis_durable: %w", err)
	}
	return w, nil
}

// Run checks now and every interval until ctx ends.
func (w *PersistenceWatch) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check runs one check and logs what changed.
func (w *PersistenceWatch) Check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	found, err := CheckPersistence(cctx, w.rdb)
	if err != nil && ctx.Err() == nil {
		// Redis being down is the readiness check's to report.
		w.log.Debug("could not read the Redis persistence settings", "err", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	previous := w.last
	// The primaries of this check only: a Redis Cluster's failover
	// replaces them.
	w.last = make(map[string]Persistence, len(found))
	for _, p := range found {
		before, seen := previous[p.Addr]
		w.last[p.Addr] = p
		if seen && before == p {
			continue
		}
		switch {
		case p.Durable():
			if seen {
				w.log.Info("redis persistence is durable now", "server", p.Addr, "persistence", p.String())
			}
		case !p.AOF:
			w.log.Warn("redis persistence: the append-only file is off: messages queued for offline sessions are lost when redis-server restarts; run it with appendonly yes, appendfsync always (docs/operations.md, Redis persistence)",
				"server", p.Addr, "persistence", p.String())
		case !p.Known():
			w.log.Info("redis persistence: the append-only file is on, appendfsync could not be read (CONFIG GET refused); with appendfsync always a crash of the machine loses nothing (docs/operations.md, Redis persistence)",
				"server", p.Addr, "persistence", p.String())
		default:
			w.log.Warn("redis persistence: appendfsync is not always: a crash of the machine may lose the last second of queued messages; run it with appendfsync always (docs/operations.md, Redis persistence)",
				"server", p.Addr, "persistence", p.String())
		}
	}
}
