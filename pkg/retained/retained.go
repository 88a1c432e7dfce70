package retained

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// LegacyKey is the one hash that held every retained message before they
// were spread over Buckets hashes. Readers still read it while it exists;
// Migrate moves its entries into the buckets and so empties it.
const LegacyKey = "fg:retained"

// Buckets is the number of hashes the retained messages are spread over. A
// topic's hash is chosen by its first two levels (bucketOf), so that a
// filter whose first two levels are literal ("devices/d-17/cmd/#", the
// filter a device subscribes to for its own topics) reads one hash, a
// Buckets-th of the store, instead of all of it. Each hash is a Redis
// Cluster slot of its own ("fg:retained:{n}"): the store spreads over the
// shards. Changing it moves every topic's hash: it is not a setting.
const Buckets = 1024

// bucketKeys are the Redis keys of the buckets, by number.
var bucketKeys = func() (keys [Buckets]string) {
	for i := range keys {
		keys[i] = "fg:retained:{" + strconv.Itoa(i) + "}"
	}
	return keys
}()

// BucketKey returns the Redis key of bucket b (0 ≤ b < Buckets).
func BucketKey(b int) string { return bucketKeys[b] }

// KeyOf returns the Redis key of the hash that holds topic's retained
// message.
func KeyOf(topic string) string { return bucketKeys[bucketOf(topic)] }

// bucketOf returns the bucket of a topic name: FNV-1a (32 bits) of its
// first two levels (the whole name when it has fewer), modulo Buckets.
func bucketOf(topic string) int {
	return int(fnv1a(pinPrefix(topic)) % Buckets)
}

// pinPrefix returns name up to its second "/" (exclusive), or all of it.
func pinPrefix(name string) string {
	i := strings.IndexByte(name, '/')
	if i < 0 {
		return name
	}
	if j := strings.IndexByte(name[i+1:], '/'); j >= 0 {
		return name[:i+1+j]
	}
	return name
}

// pinnedBucket returns the one bucket that holds every topic filter can
// match, when filter's first two levels are literal; ok is false when a
// wildcard in them lets it match topics of any bucket.
func pinnedBucket(filter string) (b int, ok bool) {
	p := pinPrefix(filter)
	if len(p) == len(filter) || strings.ContainsAny(p, "+#") {
		// Fewer than three levels: "a/#" or "a/+" match any second level
		// (and a filter without wildcards is an exact lookup anyway).
		return 0, false
	}
	return int(fnv1a(p) % Buckets), true
}

func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// TombstoneTTL is how long a delete is remembered (see Ordering in the
// package docs): an update older than a delete that arrives later than this
// after it would bring the deleted message back. It bounds how far behind a
// dispatcher may fall.
const TombstoneTTL = 24 * time.Hour

// ErrEmptyTopic is returned by Apply for a message without a topic.
var ErrEmptyTopic = errors.New("retained message without a topic name")

// maxPipeline bounds the scripts of one Redis pipeline.
const maxPipeline = 1024

// scanCount is the COUNT hint of each HSCAN call of one hash.
const scanCount = 1000

// scanWidth is the buckets scanned in one pipeline when a filter may match
// topics of every bucket, and scanWideCount the COUNT hint of each of those
// HSCAN calls: a round reads about scanWidth × scanWideCount entries of a
// large store, and small buckets (Redis returns a listpack-encoded hash
// whole) in scanWidth at a time.
const (
	scanWidth     = 64
	scanWideCount = 32
)

// Message is one retained message.
type Message struct {
	Topic string
	// Message is the encoded message (handoff.EncodeMessage bytes, with
	// the QoS as published and Retain set); opaque to this package.
	Message []byte
	// Expiry is when the message expires [MQTT-3.3.2-5]; zero means never.
	Expiry time.Time
}

// Update is one change for ApplyAll: the arguments of one Apply.
type Update struct {
	Message Message
	Version Version
	Remove  bool
}

// Store keeps the retained message of every topic in Redis. It is safe for
// concurrent use.
type Store struct {
	rdb redis.UniversalClient
	log *slog.Logger
	now func() time.Time

	// legacy remembers whether the legacy hash exists, so that readers
	// stop reading it once the dispatchers moved it (see legacyRecheck).
	legacy struct {
		gone     atomic.Bool
		at       atomic.Int64 // unix ns of the last check; 0: never
		checking atomic.Bool
		recheck  time.Duration
	}
}

// legacyRecheck is how often a Store checks again whether the legacy hash
// exists. Until its first check says it does not, a Store reads it; after,
// a dispatcher of an older build that writes it again during a rolling
// upgrade is seen within this time.
const legacyRecheck = 30 * time.Second

// New returns a Store on rdb. It does no I/O.
func New(rdb redis.UniversalClient, log *slog.Logger) *Store {
	s := &Store{rdb: rdb, log: log.With("component", "retained"), now: time.Now}
	s.legacy.recheck = legacyRecheck
	return s
}

// readLegacy reports whether a read should also read the legacy hash: yes
// until a check found it gone. A check older than legacy.recheck starts a
// new one in the background.
func (s *Store) readLegacy() bool {
	now := time.Now().UnixNano()
	if now-s.legacy.at.Load() > int64(s.legacy.recheck) && s.legacy.checking.CompareAndSwap(false, true) {
		go func() {
			defer s.legacy.checking.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := s.rdb.Exists(ctx, LegacyKey).Result()
			if err != nil {
				return // read it meanwhile; the next read checks again
			}
			s.legacy.gone.Store(n == 0)
			s.legacy.at.Store(time.Now().UnixNano())
		}()
	}
	return !s.legacy.gone.Load()
}

// luaParse parses a hash value (see encode) into kind, version ms, the time
// field (expiry or purge, ms) and id; nil when the value is malformed.
// luaCompare compares two strings byte by byte (Lua's < follows the
// server's locale).
const luaParse = `
local function parse(v)
  local kind = string.sub(v, 1, 1)
  if (kind ~= 'm' and kind ~= 't') or string.sub(v, 2, 2) ~= '|' then return nil end
  local p1 = string.find(v, '|', 3, true)
  if not p1 then return nil end
  local p2 = string.find(v, '|', p1 + 1, true)
  if not p2 then return nil end
  local p3 = string.find(v, '|', p2 + 1, true)
  if not p3 then return nil end
  local vms = tonumber(string.sub(v, 3, p1 - 1))
  local at = tonumber(string.sub(v, p1 + 1, p2 - 1))
  local n = tonumber(string.sub(v, p2 + 1, p3 - 1))
  if not vms or not at or not n or n < 0 or p3 + n > #v then return nil end
  return kind, vms, at, string.sub(v, p3 + 1, p3 + n)
end
local function compare(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  if #a < #b then return -1 end
  if #a > #b then return 1 end
  return 0
end
`

// applyScript: KEYS[1] the hash; ARGV topic, version ms, id, new value.
// Returns 1 when it stored the value, 0 when the stored entry is newer.
var applyScript = redis.NewScript(luaParse + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local _, vms, _, id = parse(cur)
  if vms then
    local nv = tonumber(ARGV[2])
    if vms > nv or (vms == nv and compare(id, ARGV[3]) > 0) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
`)

// cleanupScript: KEYS[1] the hash; ARGV topic, now ms, purge ms of a new
// tombstone. Deletes the topic's tombstone if its purge time passed, turns
// an expired message into a tombstone with the message's version; returns
// 1 when it changed something.
var cleanupScript = redis.NewScript(luaParse + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local kind, vms, at, id = parse(cur)
if not kind then return 0 end
local now = tonumber(ARGV[2])
if kind == 't' and at <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
if kind == 'm' and at > 0 and at <= now then
  redis.call('HSET', KEYS[1], ARGV[1], 't|' .. string.format('%.0f', vms) .. '|' .. ARGV[3] .. '|' .. #id .. '|' .. id)
  return 1
end
return 0
`)

// Apply stores m as the retained message of its topic [MQTT-3.3.1-5], or
// deletes the topic's retained message when remove is true (a retained
// PUBLISH with an empty payload [MQTT-3.3.1-6] [MQTT-3.3.1-7] (v5) /
// [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v3.1.1)). An update whose version is lower than the stored one's is
// ignored, deletes included (see Ordering in the package docs). Applying
// the same update again changes nothing, so a failed batch can be retried.
func (s *Store) Apply(ctx context.Context, m Message, v Version, remove bool) error {
	_, err := s.ApplyAll(ctx, []Update{{Message: m, Version: v, Remove: remove}})
	return err
}

// ApplyAll applies each update as Apply does, pipelined, and reports for
// each whether it changed the store (false: a newer version was there). The
// error is the first failure; updates are independent, so after a failure
// the whole slice may be applied again.
func (s *Store) ApplyAll(ctx context.Context, ups []Update) ([]bool, error) {
	applied := make([]bool, len(ups))
	for _, u := range ups {
		if u.Message.Topic == "" {
			return applied, ErrEmptyTopic
		}
	}
	purge := s.now().Add(TombstoneTTL)
	for start := 0; start < len(ups); start += maxPipeline {
		chunk := ups[start:min(start+maxPipeline, len(ups))]
		keys := make([]string, len(chunk))
		args := make([][]any, len(chunk))
		for i, u := range chunk {
			e := entry{kind: kindMessage, version: u.Version, at: u.Message.Expiry, message: u.Message.Message}
			if u.Remove {
				e = entry{kind: kindTombstone, version: u.Version, at: purge}
			}
			keys[i] = KeyOf(u.Message.Topic)
			args[i] = []any{u.Message.Topic, strconv.FormatInt(u.Version.TimeMs, 10), u.Version.ID, e.encode()}
		}
		res, err := s.runAll(ctx, applyScript, keys, args)
		for i, r := range res {
			applied[start+i] = r == 1
		}
		if err != nil {
			return applied, fmt.Errorf("applying %d retained updates: %w", len(ups), err)
		}
	}
	return applied, nil
}

// runAll runs script once per argument list in one pipeline, the i-th on
// the hash keys[i], loading the script when Redis lost its script cache
// (restart, failover), and returns the integer replies in order.
func (s *Store) runAll(ctx context.Context, script *redis.Script, keys []string, args [][]any) ([]int64, error) {
	for attempt := 0; ; attempt++ {
		cmds := make([]*redis.Cmd, len(args))
		// The pipeline's own error repeats the first command error, which
		// is handled per command below.
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, a := range args {
				cmds[i] = script.EvalSha(ctx, p, keys[i:i+1], a...)
			}
			return nil
		})
		res := make([]int64, len(cmds))
		var noScript bool
		for i, c := range cmds {
			v, err := c.Int64()
			if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
				noScript = true
				continue
			}
			if err != nil {
				return res[:i], err
			}
			res[i] = v
		}
		if !noScript {
			return res, nil
		}
		// Every script is idempotent, so running the whole pipeline again
		// after loading the script is safe.
		if err := session.LoadScript(ctx, s.rdb, script); err != nil {
			return nil, fmt.Errorf("loading script: %w", err)
		}
	}
}

// Match returns the unexpired retained messages whose topic name matches
// filter, sorted by topic name [MQTT-3.3.2-5]. filter must be a valid topic
// filter without the "$share/{ShareName}/" prefix. Wildcards match as in
// topic.MatchFilter: a filter starting with "+" or "#" does not match topic
// names beginning with "$" [MQTT-4.7.2-1]. It holds every match in memory:
// Each streams them instead.
func (s *Store) Match(ctx context.Context, filter string) ([]Message, error) {
	var out []Message
	err := s.Each(ctx, filter, func(page []Message) bool {
		out = append(out, page...)
		return true
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Message) int { return strings.Compare(a.Topic, b.Topic) })
	return out, nil
}

// Each calls fn with the unexpired retained messages matching filter (as
// Match), a page at a time — what one pipeline of HSCAN calls returns, about
// 1,000 to 2,000 entries of a large store — in no particular order, until fn
// returns false or there are no more. The page is fn's until it returns;
// Each holds no more than one in memory, so a wildcard over a million
// retained topics costs a page, not a million messages.
//
// A filter without wildcards is one lookup; one whose first two levels are
// literal scans the one bucket that can hold its topics, under its literal
// prefix; any other wildcard filter scans every bucket (see Cost in the
// package docs). The legacy hash is read after the buckets while it exists.
// Entries that cannot be decoded are logged and left out.
func (s *Store) Each(ctx context.Context, filter string, fn func(page []Message) bool) error {
	now := s.now()
	if !strings.ContainsAny(filter, "+#") {
		return s.one(ctx, filter, now, fn)
	}
	pattern := "*"
	if p := literalPrefix(filter); p != "" {
		pattern = escapeGlob(p) + "*"
	}
	count := int64(scanCount)
	var keys []string
	if b, ok := pinnedBucket(filter); ok {
		keys = []string{bucketKeys[b]}
	} else {
		// Only the buckets that hold something: one pipeline of HLENs
		// first, so that a wide filter over a small store is two round
		// trips, not Buckets / scanWidth.
		var err error
		if keys, err = s.nonEmpty(ctx); err != nil {
			return fmt.Errorf("scanning retained messages for %q: %w", filter, err)
		}
		count = scanWideCount
	}
	// HSCAN may return an entry more than once (when the hash is rehashed
	// during the scan), and the legacy hash may hold a topic a bucket holds
	// too (until Migrate keeps the newer of the two; the bucket's is read
	// first): the names sent are remembered (names only, not the messages).
	seen := map[string]struct{}{}
	sc := scan{s: s, filter: filter, pattern: pattern, now: now, seen: seen, fn: fn}
	if !sc.keys(ctx, keys, count) || sc.err != nil || !s.readLegacy() {
		return sc.err
	}
	sc.keys(ctx, []string{LegacyKey}, scanCount)
	return sc.err
}

// nonEmpty returns the keys of the buckets that hold entries.
func (s *Store) nonEmpty(ctx context.Context) ([]string, error) {
	lens, err := lengths(ctx, s.rdb, false)
	if err != nil {
		return nil, err
	}
	var keys []string
	for i, n := range lens {
		if n > 0 {
			keys = append(keys, bucketKeys[i])
		}
	}
	return keys, nil
}

// lengths returns the entries of every bucket, by number, and with legacy
// those of the legacy hash last, read in one pipeline (per shard on a
// cluster).
func lengths(ctx context.Context, rdb redis.UniversalClient, legacy bool) ([]int64, error) {
	cmds := make([]*redis.IntCmd, 0, Buckets+1)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range bucketKeys {
			cmds = append(cmds, p.HLen(ctx, k))
		}
		if legacy {
			cmds = append(cmds, p.HLen(ctx, LegacyKey))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lens := make([]int64, len(cmds))
	for i, c := range cmds {
		lens[i] = c.Val()
	}
	return lens, nil
}

// one sends the retained message of the topic name, if any: the bucket's,
// or the legacy hash's when that is newer (not yet migrated).
func (s *Store) one(ctx context.Context, name string, now time.Time, fn func(page []Message) bool) error {
	var inBucket, inLegacy *redis.StringCmd
	legacy := s.readLegacy()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		inBucket = p.HGet(ctx, KeyOf(name), name)
		if legacy {
			inLegacy = p.HGet(ctx, LegacyKey, name)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("reading retained message of %q: %w", name, err)
	}
	key, v, found := KeyOf(name), "", false
	if b, err := inBucket.Result(); err == nil {
		v, found = b, true
	}
	if inLegacy != nil {
		if l, err := inLegacy.Result(); err == nil && (!found || newer(l, v)) {
			key, v, found = LegacyKey, l, true
		}
	}
	if !found {
		return nil
	}
	m, stale, ok := s.decode(name, v, now)
	if stale {
		s.cleanup(ctx, key, []string{name}, now)
	}
	if ok {
		fn([]Message{m})
	}
	return nil
}

// newer reports whether the entry a has a higher version than b; an entry
// that does not decode is never newer, and anything is newer than one that
// does not.
func newer(a, b string) bool {
	ea, err := decodeEntry(a)
	if err != nil {
		return false
	}
	eb, err := decodeEntry(b)
	return err != nil || ea.version.Compare(eb.version) > 0
}

// scan walks hashes with HSCAN for Each, up to scanWidth of them in one
// pipeline, and hands each round's matches to fn as one page.
type scan struct {
	s       *Store
	filter  string
	pattern string
	now     time.Time
	seen    map[string]struct{}
	fn      func(page []Message) bool
	err     error
}

// keys scans the hashes keys to their ends; false when fn asked to stop or
// an error (sc.err) ended the scan.
func (sc *scan) keys(ctx context.Context, keys []string, count int64) bool {
	type cursor struct {
		key string
		at  uint64
	}
	todo := make([]cursor, len(keys))
	for i, k := range keys {
		todo[i] = cursor{key: k}
	}
	var page []Message
	stale := map[string][]string{}
	for len(todo) > 0 {
		round := todo[:min(scanWidth, len(todo))]
		cmds := make([]*redis.ScanCmd, len(round))
		_, err := sc.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, c := range round {
				cmds[i] = p.HScan(ctx, c.key, c.at, sc.pattern, count)
			}
			return nil
		})
		if err != nil {
			sc.err = fmt.Errorf("scanning retained messages for %q: %w", sc.filter, err)
			return false
		}
		page = page[:0]
		clear(stale)
		var next []cursor
		for i, c := range round {
			kv, at := cmds[i].Val()
			for j := 0; j+1 < len(kv); j += 2 {
				name, v := kv[j], kv[j+1]
				if !topic.MatchFilter(sc.filter, name) {
					continue
				}
				if _, dup := sc.seen[name]; dup {
					continue
				}
				sc.seen[name] = struct{}{}
				m, st, ok := sc.s.decode(name, v, sc.now)
				if st {
					stale[c.key] = append(stale[c.key], name)
				}
				if ok {
					page = append(page, m)
				}
			}
			if at != 0 {
				next = append(next, cursor{key: c.key, at: at})
			}
		}
		for key, names := range stale {
			sc.s.cleanup(ctx, key, names, sc.now)
		}
		if len(page) > 0 && !sc.fn(page) {
			return false
		}
		todo = append(next, todo[len(round):]...)
	}
	return true
}

// decode turns the hash value v of topic name into a Message. ok is false
// when there is none to send (tombstone, expired, malformed); stale is true
// when the entry is due for cleanup.
func (s *Store) decode(name, v string, now time.Time) (m Message, stale, ok bool) {
	e, err := decodeEntry(v)
	if err != nil {
		// Never log the value: it holds a payload.
		s.log.Warn("skipping malformed retained entry", "topic", name, "err", err)
		return Message{}, false, false
	}
	switch {
	case e.purgeable(now), e.expired(now):
		return Message{}, true, false
	case e.kind == kindTombstone:
		return Message{}, false, false
	}
	return Message{Topic: name, Message: e.message, Expiry: e.at}, false, true
}

// cleanup purges the due tombstones and turns the expired messages of names
// in the hash key into tombstones, each checked again by the script. It is
// best effort: an entry left behind is cleaned up by a later Match.
func (s *Store) cleanup(ctx context.Context, key string, names []string, now time.Time) {
	nowMs := strconv.FormatInt(now.UnixMilli(), 10)
	purge := strconv.FormatInt(now.Add(TombstoneTTL).UnixMilli(), 10)
	for start := 0; start < len(names); start += maxPipeline {
		chunk := names[start:min(start+maxPipeline, len(names))]
		keys := make([]string, len(chunk))
		args := make([][]any, len(chunk))
		for i, n := range chunk {
			keys[i] = key
			args[i] = []any{n, nowMs, purge}
		}
		if _, err := s.runAll(ctx, cleanupScript, keys, args); err != nil {
			s.log.Debug("cleaning up stale retained entries failed; a later match retries", "entries", len(chunk), "err", err)
			return
		}
	}
}

// literalPrefix returns the part of filter before its first wildcard,
// without a trailing "/": every topic name the filter matches starts with it
// ("sport/#" matches "sport", so the "/" has to go).
func literalPrefix(filter string) string {
	i := strings.IndexAny(filter, "+#")
	if i < 0 {
		return filter
	}
	return strings.TrimSuffix(filter[:i], "/")
}

// escapeGlob escapes the characters special in Redis MATCH patterns.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
