package retained

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// QuotaConfig bounds the retained messages devices may leave: how many the
// store holds and how large one may be. Records produced to Kafka by
// backends are trusted and not bounded.
type QuotaConfig struct {
	// MaxMessages bounds the retained topics (tombstones included); 0
	// means no bound.
	MaxMessages int `yaml:"max_messages"`
	// MaxMessageBytes bounds the payload of one retained message; 0 means
	// no bound beyond the packet size.
	MaxMessageBytes config.ByteSize `yaml:"max_message_bytes"`
}

// RegisterFlags registers the flags under "retained.".
func (c *QuotaConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxMessages, "retained.max-messages", 1000000, "Most retained topics the store holds (in 1,024 Redis hashes, spread over a cluster's shards): past it a device's PUBLISH with RETAIN 1 and a payload is refused (MQTT 5: PUBACK/PUBREC 0x97; MQTT 3.1.1: the connection closes); one with an empty payload, which removes one, always passes. Counted about once a second (every 10 s while the store is under half a bound of 10,000 or more), so it may be passed by what arrives in between. 0: no bound.")
	c.MaxMessageBytes = 64 << 10
	fs.Var(&c.MaxMessageBytes, "retained.max-message-bytes", "Largest payload of a retained message a device may leave: a bigger PUBLISH with RETAIN 1 is refused as for retained.max-messages. 0: no bound.")
}

// Validate names the bad field.
func (c *QuotaConfig) Validate() error {
	var errs []error
	if c.MaxMessages < 0 {
		errs = append(errs, fmt.Errorf("retained.max-messages: %d must not be negative", c.MaxMessages))
	}
	if c.MaxMessageBytes < 0 {
		errs = append(errs, fmt.Errorf("retained.max-message-bytes: %d must not be negative", c.MaxMessageBytes))
	}
	return errors.Join(errs...)
}

// Refusals of Quota.Allow.
var (
	ErrRetainedTooLarge = errors.New("retained message larger than retained.max-message-bytes")
	ErrRetainedFull     = errors.New("retained store holds retained.max-messages")
)

// countEvery is how often Quota counts the retained topics; countRarely
// how often while the store holds less than half a bound of at least
// countRarelyFrom topics (a count is an HLEN of every bucket, 1,025
// commands: a frontend whose devices publish retained messages all the
// time would send them every second). Below half the bound, reaching it
// takes more than half of it in new topics, which the bound may be passed
// by in those 10 s.
const (
	countEvery      = time.Second
	countRarely     = 10 * time.Second
	countRarelyFrom = 10000
)

// countInterval is the time from one count to the next.
func (q *Quota) countInterval() time.Duration {
	if q.cfg.MaxMessages >= countRarelyFrom && q.count.Load() < int64(q.cfg.MaxMessages/2) {
		return countRarely
	}
	return countEvery
}

// Quota decides whether a device may leave a retained message. The count
// is read from Redis (Count: an HLEN of every bucket, in one pipeline) at
// most once per countEvery, in the background
// of the call that finds it stale, so a PUBLISH never waits for it; an idle
// node never counts. Safe for concurrent use.
type Quota struct {
	cfg QuotaConfig
	rdb redis.UniversalClient
	log *slog.Logger

	count    atomic.Int64
	countAt  atomic.Int64 // unix ns of the last count; 0 never
	counting atomic.Bool
	failed   atomic.Int64 // unix s of the last logged failure
}

// NewQuota returns the quota over the store in rdb. It does no I/O.
func NewQuota(cfg QuotaConfig, rdb redis.UniversalClient, log *slog.Logger) *Quota {
	return &Quota{cfg: cfg, rdb: rdb, log: log.With("component", "retained")}
}

// Allow reports why a retained message with a payload of size bytes may
// not be stored, nil when it may. An empty payload (which removes the
// topic's retained message) is always allowed.
func (q *Quota) Allow(size int) error {
	if size == 0 {
		return nil
	}
	if q.cfg.MaxMessageBytes > 0 && int64(size) > int64(q.cfg.MaxMessageBytes) {
		return ErrRetainedTooLarge
	}
	if q.cfg.MaxMessages <= 0 {
		return nil
	}
	if now := time.Now().UnixNano(); now-q.countAt.Load() > int64(q.countInterval()) && q.counting.CompareAndSwap(false, true) {
		go q.recount()
	}
	if q.countAt.Load() != 0 && q.count.Load() >= int64(q.cfg.MaxMessages) {
		return ErrRetainedFull
	}
	return nil
}

// Count returns the retained topics at the last count.
func (q *Quota) Count() int64 { return q.count.Load() }

func (q *Quota) recount() {
	defer q.counting.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := Count(ctx, q.rdb)
	if err != nil {
		// Keep the last count; say so at most once a minute.
		if now := time.Now().Unix(); q.failed.Swap(now) < now-60 {
			q.log.Warn("counting retained messages failed; the last count stands", "err", err)
		}
		return
	}
	q.count.Store(n)
	q.countAt.Store(time.Now().UnixNano())
}

// Count returns the retained topics in the store (tombstones included):
// the lengths of every bucket and of the legacy hash, read in one pipeline
// (per shard on a cluster).
func Count(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	lens, err := lengths(ctx, rdb, true)
	if err != nil {
		return 0, fmt.Errorf("counting retained messages: %w", err)
	}
	var n int64
	for _, l := range lens {
		n += l
	}
	return n, nil
}
