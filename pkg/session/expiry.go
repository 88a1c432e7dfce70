package session

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// expiringKey is a sorted set of the disconnected sessions that expire,
// scored by when (unix ms). It is one key for the whole cluster, outside the
// sessions' hash tags, so it is written next to the session scripts, not in
// them: in the same pipeline, before the script (runDisconnects), so that
// only a crash while that pipeline is written can leave a session that
// expires without an entry, whose subscriptions then stay in the change
// log (matching no session).
const expiringKey = "fg:expiring"

// maxExpiry is the longest session.max-expiry: an interval of 0xFFFFFFFF
// seconds means that the session never expires (MQTT 5 section 3.1.2.11.2).
const maxExpiry = (math.MaxUint32 - 1) * time.Second

// Expiry is the Session Expiry Interval, in seconds, that a session of a
// connection with protocol version protocol uses once the connection ends:
// MQTT 5's requested interval (from CONNECT, or as DISCONNECT changed it
// [MQTT-3.14.2-2]) capped by MaxExpiry, 0xFFFFFFFF (never) included; for
// MQTT 3.1 and 3.1.1, 0 for a clean session and MQTT3Expiry for a
// persistent one. It is never 0xFFFFFFFF: every session ends.
func (c *Config) Expiry(protocol byte, clean bool, requested uint32) uint32 {
	if protocol < 5 {
		if clean {
			return 0
		}
		return uint32(c.MQTT3Expiry / time.Second)
	}
	return min(requested, uint32(c.MaxExpiry/time.Second))
}

// Expiry is the store configuration's Config.Expiry: the frontend's session
// layer applies it to every expiry it records.
func (s *Store) Expiry(protocol byte, clean bool, requested uint32) uint32 {
	return s.cfg.Expiry(protocol, clean, requested)
}

// ExpiringSession is a session whose expiry time has passed.
type ExpiringSession struct {
	ClientID string
	// At is the expiry time recorded when it disconnected; pass it back
	// to ForgetExpiring.
	At time.Time
}

// ExpiredSessions lists up to limit sessions whose recorded expiry is at or
// before now. A listed session may have been resumed since (Exists says so)
// or may be disconnected again with a later expiry (ForgetExpiring then
// keeps its entry).
func (s *Store) ExpiredSessions(ctx context.Context, now time.Time, limit int) ([]ExpiringSession, error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, expiringKey, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("listing expired sessions: %w", err)
	}
	out := make([]ExpiringSession, len(zs))
	for i, z := range zs {
		id, _ := z.Member.(string)
		out[i] = ExpiringSession{ClientID: id, At: time.UnixMilli(int64(z.Score))}
	}
	return out, nil
}

var forgetExpiringScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
`)

// ForgetExpiring removes e from the expiry index, unless the session was
// disconnected again since and so carries a new expiry time.
func (s *Store) ForgetExpiring(ctx context.Context, e ExpiringSession) error {
	err := forgetExpiringScript.Run(ctx, s.rdb, []string{expiringKey}, e.ClientID, strconv.FormatInt(e.At.UnixMilli(), 10)).Err()
	if err != nil {
		return fmt.Errorf("forgetting expired session %s: %w", e.ClientID, err)
	}
	return nil
}

// Exists reports whether clientID has a session.
func (s *Store) Exists(ctx context.Context, clientID string) (bool, error) {
	n, err := s.rdb.Exists(ctx, sessionKey(clientID)).Result()
	if err != nil {
		return false, fmt.Errorf("checking session %s: %w", clientID, err)
	}
	return n == 1, nil
}

// SharedHold is how long the queue and inflight hash of a session that
// held a shared subscription outlive the session when it expires, or when
// it ends holding such messages undelivered (Ended.Kept): the dispatchers'
// expiry sweep (every dispatch.expiry-sweep-interval) hands the shared
// messages in them to another member (ExpiredShared) and deletes them
// (DiscardExpired), unless whoever ended the session did so first. If no
// sweep comes within it, Redis deletes them.
const SharedHold = 10 * time.Minute

var (
	sharedHoldSeconds = strconv.Itoa(int(SharedHold / time.Second))
	sharedHoldMillis  = strconv.Itoa(int(SharedHold / time.Millisecond))
)

// expiredSharedScript: KEYS the session's keys. Nothing when the
// session exists (resumed, or a new one); else the shared messages left in
// the expired session's queue and inflight hash, as disconnectScript
// returns them.
var expiredSharedScript = redis.NewScript(luaSharedEntries + `
if redis.call('EXISTS', KEYS[1]) == 1 then return {{}, {}} end
local inflight, queued = sharedEntries(nil)
return {inflight, queued}
`)

// ExpiredShared returns the messages of shared subscriptions left in the
// queue and inflight hash of clientID's session after it expired (they
// outlive it by SharedHold), oldest first; none when the client has a
// session again. They stay until DiscardExpired.
func (s *Store) ExpiredShared(ctx context.Context, clientID string) ([]SharedMessage, error) {
	v, err := expiredSharedScript.Run(ctx, s.rdb, sessionKeys(clientID)).Slice()
	if err != nil {
		return nil, fmt.Errorf("reading the shared messages of expired session %s: %w", clientID, err)
	}
	if len(v) != 2 {
		return nil, fmt.Errorf("reading the shared messages of expired session %s: unexpected reply %v", clientID, v)
	}
	return s.parseEnded(ctx, clientID, nil, v[0], v[1]).Shared, nil
}

var discardExpiredScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return redis.call('DEL', KEYS[3], KEYS[4])
`)

// DiscardExpired deletes what is left of clientID's expired or ended
// session (its queue and inflight hash; see Ended.Kept), unless the client
// has a session again.
func (s *Store) DiscardExpired(ctx context.Context, clientID string) error {
	if err := discardExpiredScript.Run(ctx, s.rdb, sessionKeys(clientID)).Err(); err != nil {
		return fmt.Errorf("discarding the rest of expired session %s: %w", clientID, err)
	}
	return nil
}
