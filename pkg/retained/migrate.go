package retained

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// dropIfScript: KEYS[1] the legacy hash; ARGV topic, value. Deletes the
// topic's entry when it still holds value (a writer of an older build may
// have replaced it since it was read); returns 1 when it did.
var dropIfScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
`)

// MigrateProgress is how often Migrate logs its progress.
const MigrateProgress = 10 * time.Second

// Migrate moves the entries of the legacy hash (LegacyKey, the layout of
// builds before Buckets) into their buckets, a page at a time: each entry is
// applied to its bucket as Apply would (an entry the bucket holds in a
// newer version stays), then deleted from the legacy hash if it did not
// change meanwhile. Readers read the legacy hash while it exists, so
// nothing is missed during the move, and the move is idempotent: several
// dispatchers may run it at once, and one stopped halfway is resumed by the
// next. It returns the entries it moved. Entries that do not decode stay,
// logged once each.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	n, err := s.rdb.HLen(ctx, LegacyKey).Result()
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", LegacyKey, err)
	}
	if n == 0 {
		return 0, nil
	}
	start := time.Now()
	s.log.Info("moving retained messages into their buckets", "from", LegacyKey, "entries", n, "buckets", Buckets)
	moved, lastLog := 0, start
	var cursor uint64
	for {
		kv, next, err := s.rdb.HScan(ctx, LegacyKey, cursor, "*", scanCount).Result()
		if err != nil {
			return moved, fmt.Errorf("scanning %s: %w", LegacyKey, err)
		}
		var keys, legacy []string
		var args, drops [][]any
		for i := 0; i+1 < len(kv); i += 2 {
			name, v := kv[i], kv[i+1]
			e, err := decodeEntry(v)
			if err != nil || name == "" {
				s.log.Warn("leaving a malformed retained entry in the legacy hash", "topic", name, "err", err)
				continue
			}
			keys = append(keys, KeyOf(name))
			args = append(args, []any{name, strconv.FormatInt(e.version.TimeMs, 10), e.version.ID, v})
			legacy = append(legacy, LegacyKey)
			drops = append(drops, []any{name, v})
		}
		if len(args) > 0 {
			if _, err := s.runAll(ctx, applyScript, keys, args); err != nil {
				return moved, fmt.Errorf("moving retained messages into their buckets: %w", err)
			}
			res, err := s.runAll(ctx, dropIfScript, legacy, drops)
			if err != nil {
				return moved, fmt.Errorf("deleting moved retained messages from %s: %w", LegacyKey, err)
			}
			for _, r := range res {
				moved += int(r)
			}
		}
		if time.Since(lastLog) >= MigrateProgress {
			lastLog = time.Now()
			s.log.Info("moving retained messages into their buckets", "moved", moved, "of", n, "elapsed", time.Since(start).Round(time.Second))
		}
		cursor = next
		if cursor == 0 {
			break
		}
	}
	s.log.Info("retained messages moved into their buckets", "moved", moved, "took", time.Since(start).Round(time.Millisecond))
	return moved, nil
}

// RunMigration runs Migrate until a pass finds nothing left to move or ctx
// ends, waiting retry after a failure or a pass that moved something (a
// dispatcher of an older build may still be adding entries during a rolling
// upgrade; what one adds after the last pass stays readable there, and the
// next dispatcher to start moves it).
func (s *Store) RunMigration(ctx context.Context, retry time.Duration) {
	for {
		moved, err := s.Migrate(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("moving retained messages into their buckets failed; readers still read the legacy hash", "err", err, "retry_in", retry)
		} else if moved == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}
