package retained

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Key is the Redis hash of retained messages.
const Key = "fg:retained"

// TombstoneTTL is how long a delete is remembered (see Ordering in the
// package docs): an update older than a delete that arrives later than this
// after it would bring the deleted message back. It bounds how far behind a
// dispatcher may fall.
const TombstoneTTL = 24 * time.Hour

// ErrEmptyTopic is returned by Apply for a message without a topic.
var ErrEmptyTopic = errors.New("retained message without a topic name")

// maxPipeline bounds the scripts of one Redis pipeline.
const maxPipeline = 1024

// scanCount is the COUNT hint of each HSCAN call.
const scanCount = 1000

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
}

// New returns a Store on rdb. It does no I/O.
func New(rdb redis.UniversalClient, log *slog.Logger) *Store {
	return &Store{rdb: rdb, log: log.With("component", "retained"), now: time.Now}
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
		args := make([][]any, len(chunk))
		for i, u := range chunk {
			e := entry{kind: kindMessage, version: u.Version, at: u.Message.Expiry, message: u.Message.Message}
			if u.Remove {
				e = entry{kind: kindTombstone, version: u.Version, at: purge}
			}
			args[i] = []any{u.Message.Topic, strconv.FormatInt(u.Version.TimeMs, 10), u.Version.ID, e.encode()}
		}
		res, err := s.runAll(ctx, applyScript, args)
		for i, r := range res {
			applied[start+i] = r == 1
		}
		if err != nil {
			return applied, fmt.Errorf("applying %d retained updates: %w", len(ups), err)
		}
	}
	return applied, nil
}

// runAll runs script once per argument list in one pipeline, loading the
// script when Redis lost its script cache (restart, failover), and returns
// the integer replies in order.
func (s *Store) runAll(ctx context.Context, script *redis.Script, args [][]any) ([]int64, error) {
	keys := []string{Key}
	for attempt := 0; ; attempt++ {
		cmds := make([]*redis.Cmd, len(args))
		// The pipeline's own error repeats the first command error, which
		// is handled per command below.
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, a := range args {
				cmds[i] = script.EvalSha(ctx, p, keys, a...)
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
		if err := script.Load(ctx, s.rdb).Err(); err != nil {
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
// Match), a page at a time — what one HSCAN call returns, about 1,000
// entries — in no particular order, until fn returns false or there are no
// more. The page is fn's until it returns; Each holds no more than one in
// memory, so a wildcard over a million retained topics costs a page, not
// a million messages.
//
// A filter without wildcards is one lookup; one with wildcards scans every
// retained topic under its literal prefix (see Cost in the package docs).
// Entries that cannot be decoded are logged and left out.
func (s *Store) Each(ctx context.Context, filter string, fn func(page []Message) bool) error {
	now := s.now()
	if !strings.ContainsAny(filter, "+#") {
		v, err := s.rdb.HGet(ctx, Key, filter).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading retained message of %q: %w", filter, err)
		}
		m, stale, ok := s.decode(filter, v, now)
		if stale {
			s.cleanup(ctx, []string{filter}, now)
		}
		if ok {
			fn([]Message{m})
		}
		return nil
	}

	pattern := "*"
	if p := literalPrefix(filter); p != "" {
		pattern = escapeGlob(p) + "*"
	}
	// HSCAN may return an entry more than once (when the hash is rehashed
	// during the scan): the names sent are remembered (names only, not the
	// messages).
	seen := map[string]struct{}{}
	var page []Message
	var stale []string
	var cursor uint64
	for {
		kv, next, err := s.rdb.HScan(ctx, Key, cursor, pattern, scanCount).Result()
		if err != nil {
			return fmt.Errorf("scanning retained messages for %q: %w", filter, err)
		}
		page, stale = page[:0], stale[:0]
		for i := 0; i+1 < len(kv); i += 2 {
			name, v := kv[i], kv[i+1]
			if !topic.MatchFilter(filter, name) {
				continue
			}
			if _, dup := seen[name]; dup {
				continue
			}
			seen[name] = struct{}{}
			m, st, ok := s.decode(name, v, now)
			if st {
				stale = append(stale, name)
			}
			if ok {
				page = append(page, m)
			}
		}
		if len(stale) > 0 {
			s.cleanup(ctx, stale, now)
		}
		if len(page) > 0 && !fn(page) {
			return nil
		}
		cursor = next
		if cursor == 0 {
			return nil
		}
	}
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
// into tombstones, each checked again by the script. It is best effort: an
// entry left behind is cleaned up by a later Match.
func (s *Store) cleanup(ctx context.Context, names []string, now time.Time) {
	nowMs := strconv.FormatInt(now.UnixMilli(), 10)
	purge := strconv.FormatInt(now.Add(TombstoneTTL).UnixMilli(), 10)
	for start := 0; start < len(names); start += maxPipeline {
		chunk := names[start:min(start+maxPipeline, len(names))]
		args := make([][]any, len(chunk))
		for i, n := range chunk {
			args[i] = []any{n, nowMs, purge}
		}
		if _, err := s.runAll(ctx, cleanupScript, args); err != nil {
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
