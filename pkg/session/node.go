package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// nodesKey is the node registry: a sorted set of node ids, scored by the
// unix time in ms of each node's last heartbeat (the node's clock). It lets a
// sweeper find nodes that died without scanning the keyspace; the liveness
// key fg:node:{node} stays the authority on whether a node is alive.
const nodesKey = "fg:nodes"

// sweptFor is how long the mark of a swept node (MarkSwept) stays: a node
// paused or cut off from Redis for longer learns nothing when it comes
// back, and its sessions' fences close its connections one by one instead.
const sweptFor = 24 * time.Hour

// Heartbeat marks node alive for node.liveness-ttl and records it in the
// node registry (see DeadNodes).
func (s *Store) Heartbeat(ctx context.Context, node string) error {
	_, err := s.heartbeat(ctx, node)
	return err
}

// heartbeat is Heartbeat, and returns the mark a sweeper left when it took
// node for dead (MarkSwept), empty if none.
func (s *Store) heartbeat(ctx context.Context, node string) (swept string, err error) {
	now := s.now().UnixMilli()
	// Two slots in Redis Cluster (the node's keys share one), so a pipeline
	// rather than a script: a heartbeat that fails half way is repeated at
	// the next tick.
	var mark *redis.StringCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, nodeKey(node), now, s.cfg.LivenessTTL)
		p.ZAdd(ctx, nodesKey, redis.Z{Score: float64(now), Member: node})
		mark = p.Get(ctx, sweptKey(node))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("heartbeat of node %s: %w", node, err)
	}
	return mark.Val(), nil
}

// MarkSwept records that a sweeper took node for dead and is about to end
// what its clients' connections hold in the store (their wills claimed,
// their sessions marked disconnected). A node that was alive all along,
// paused or cut off from Redis for node.liveness-ttl, finds the mark with
// its next heartbeat (RunHeartbeat) and closes those connections, so that
// their clients reconnect and resume their sessions properly.
func (s *Store) MarkSwept(ctx context.Context, node string) error {
	if err := s.rdb.Set(ctx, sweptKey(node), s.now().UnixMilli(), sweptFor).Err(); err != nil {
		return fmt.Errorf("marking node %s swept: %w", node, err)
	}
	return nil
}

// DeadNode is a node whose liveness lapsed, found by DeadNodes.
type DeadNode struct {
	Node string
	// LastSeen is the node's last heartbeat, by the node's clock.
	LastSeen time.Time
	// DeadSince is LastSeen + node.liveness-ttl: the node held no
	// connection after it (its clients' connections ended by then).
	DeadSince time.Time
}

// DeadNodes lists the registered nodes whose last heartbeat is older than
// node.liveness-ttl and whose liveness key fg:node:{node} no longer exists.
// The registry score only preselects (it is the heartbeating node's clock,
// so clock skew can only delay the verdict); the liveness key, which Redis
// expires, decides. A node stays listed until ForgetNode removes it, and
// leaves the list by itself if it sends a heartbeat again.
func (s *Store) DeadNodes(ctx context.Context) ([]DeadNode, error) {
	cutoff := s.now().Add(-s.cfg.LivenessTTL).UnixMilli()
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, nodesKey, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff, 10),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	if len(zs) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.IntCmd, len(zs))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.Exists(ctx, nodeKey(z.Member.(string)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checking liveness of nodes: %w", err)
	}
	var out []DeadNode
	for i, z := range zs {
		if cmds[i].Val() != 0 {
			continue
		}
		last := time.UnixMilli(int64(z.Score))
		out = append(out, DeadNode{Node: z.Member.(string), LastSeen: last, DeadSince: last.Add(s.cfg.LivenessTTL)})
	}
	return out, nil
}

var forgetNodeScript = redis.NewScript(`
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
`)

// ForgetNode removes a dead node from the registry. Call it only once the
// node has no sessions left (SessionsOwnedBy is empty). A node that sent a
// heartbeat since it was found dead is kept: its registry score moved past
// node.liveness-ttl ago.
func (s *Store) ForgetNode(ctx context.Context, node string) error {
	cutoff := s.now().Add(-s.cfg.LivenessTTL).UnixMilli()
	if err := forgetNodeScript.Run(ctx, s.rdb, []string{nodesKey}, node, cutoff).Err(); err != nil {
		return fmt.Errorf("forgetting node %s: %w", node, err)
	}
	return nil
}

// LivenessTTL is node.liveness-ttl: how long a node counts as alive after
// its last heartbeat.
func (s *Store) LivenessTTL() time.Duration { return s.cfg.LivenessTTL }

// Alive reports whether node sent a heartbeat within node.liveness-ttl.
func (s *Store) Alive(ctx context.Context, node string) (bool, error) {
	n, err := s.rdb.Exists(ctx, nodeKey(node)).Result()
	if err != nil {
		return false, fmt.Errorf("checking liveness of node %s: %w", node, err)
	}
	return n == 1, nil
}

// RunHeartbeat sends a heartbeat for node at once and then every
// node.heartbeat-interval until ctx is cancelled, when it returns nil. A
// failed heartbeat is logged and retried at the next tick: if they keep
// failing for node.liveness-ttl, other processes consider the node dead,
// publish its clients' wills and mark their sessions disconnected. When a
// heartbeat gets through again and finds that a sweeper did so
// (MarkSwept), swept (if not nil) runs on a goroutine of its own, once per
// sweep: the node's connections are stale.
func (s *Store) RunHeartbeat(ctx context.Context, node string, swept func()) error {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	var last string // the mark acted on
	for {
		mark, err := s.heartbeat(ctx, node)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "node heartbeat failed", "node", node, "err", err)
		case err == nil && mark != "" && mark != last:
			last = mark
			s.log.WarnContext(ctx, "this node was taken for dead while its heartbeats did not reach redis (cut off or paused) and its sessions were swept",
				"node", node, "liveness_ttl", s.cfg.LivenessTTL)
			if swept != nil {
				go swept() // closing connections must not hold up the heartbeats
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// OwnedSession is a session that SessionsOwnedBy found on a node.
type OwnedSession struct {
	ClientID string
	// Epoch is the session's epoch when listed: pass it to ClaimWill.
	Epoch     uint64
	Connected bool
	HasWill   bool
	// Protocol is the protocol version byte of the session's connection.
	Protocol byte
	// ExpirySeconds is the Session Expiry Interval (0xFFFFFFFF: never).
	ExpirySeconds uint32
	// LastSeen is when the session connected or, if it is not connected,
	// disconnected (Redis time).
	LastSeen time.Time
	// WillDelaySeconds is the will's Will Delay Interval, when HasWill.
	WillDelaySeconds uint32
}

// SessionsOwnedBy lists the sessions whose owner is node and that are
// connected or still hold a will, for publishing the wills of a dead node.
//
// It reads the index set fg:nodesessions:{node}. That set is not hash-tagged
// by client, so it cannot be updated in the sessions' scripts: Connect adds
// to it before its script and removes the client from the previous owner's
// index after; Disconnect and ClaimWill remove a client once it has neither
// a connection nor a will. A crash between the two steps leaves a stale
// entry, never a missing one; this listing checks each entry against its
// session hash, skips the stale ones (session gone, another owner, nothing
// pending) and removes them from the index.
func (s *Store) SessionsOwnedBy(ctx context.Context, node string) ([]OwnedSession, error) {
	var out []OwnedSession
	key := nodeSessionsKey(node)
	var cursor uint64
	for {
		ids, next, err := s.rdb.SScan(ctx, key, cursor, "", 512).Result()
		if err != nil {
			return nil, fmt.Errorf("listing sessions of node %s: %w", node, err)
		}
		cmds := make([]*redis.SliceCmd, len(ids))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HMGet(ctx, sessionKey(id), "node", "epoch", "connected", "will", "proto", "expiry", "last_seen")
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading sessions of node %s: %w", node, err)
		}
		var stale []any
		for i, c := range cmds {
			v := c.Val()
			str := func(j int) string { x, _ := v[j].(string); return x }
			num := func(j int) uint64 { n, _ := strconv.ParseUint(str(j), 10, 64); return n }
			epoch, perr := strconv.ParseUint(str(1), 10, 64)
			o := OwnedSession{
				ClientID:      ids[i],
				Epoch:         epoch,
				Connected:     str(2) == "1",
				HasWill:       v[3] != nil,
				Protocol:      byte(num(4)),
				ExpirySeconds: uint32(num(5)),
				LastSeen:      time.UnixMilli(int64(num(6))),
			}
			if str(0) != node || perr != nil || (!o.Connected && !o.HasWill) {
				stale = append(stale, ids[i])
				continue
			}
			if o.HasWill {
				// Only the delay; an undecodable will is reported by
				// ClaimWill.
				var w struct {
					Delay uint32 `json:"d"`
				}
				_ = json.Unmarshal([]byte(str(3)), &w)
				o.WillDelaySeconds = w.Delay
			}
			out = append(out, o)
		}
		if len(stale) > 0 {
			if err := s.rdb.SRem(ctx, key, stale...).Err(); err != nil {
				s.log.WarnContext(ctx, "removing stale node index entries", "node", node, "err", err)
			}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

var claimWillScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
local v = redis.call('HMGET', KEYS[1], 'will', 'connected', 'node')
if v[1] then redis.call('HDEL', KEYS[1], 'will') end
return {v[1] or '', v[2] or '0', v[3] or ''}
`)

// ClaimWill atomically takes the session's will and clears it, so exactly
// one caller gets it: the owning node when it publishes (after the will
// delay [MQTT-3.1.3-9]) or discards it (normal disconnect [MQTT-3.1.2-10]),
// or a sweeper for a dead node, fenced by the epoch SessionsOwnedBy saw. It
// returns nil when there is no will (already claimed or none given), and
// ErrFenced when the client reconnected since.
func (s *Store) ClaimWill(ctx context.Context, clientID string, epoch uint64) (*Will, error) {
	v, err := claimWillScript.Run(ctx, s.rdb, []string{sessionKey(clientID)}, epochArg(epoch)).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claiming will of %s: %w", clientID, mapErr(err))
	}
	if len(v) != 3 {
		return nil, fmt.Errorf("claiming will of %s: unexpected reply %q", clientID, v)
	}
	if v[1] != "1" {
		// Disconnected and no will left: nothing for a sweeper any more.
		if v[2] != "" {
			s.forgetAll(ctx, map[string][]any{v[2]: {clientID}})
		}
	}
	if v[0] == "" {
		return nil, nil
	}
	var w Will
	if err := json.Unmarshal([]byte(v[0]), &w); err != nil {
		return nil, fmt.Errorf("claiming will of %s: %w", clientID, errors.Join(errors.New("malformed will"), err))
	}
	return &w, nil
}

var endWithWillScript = redis.NewScript(luaPrelude + luaSharedEntries + luaKeepShared + `
local err = fence()
if err then return err end
local v = redis.call('HMGET', KEYS[1], 'will', 'node')
local subs = redis.call('HGETALL', KEYS[2])
local inflight, queued = sharedEntries(subs)
if keepShared(inflight, queued) then
  return {v[1] or '', v[2] or '', subs, inflight, queued, 1}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {v[1] or '', v[2] or '', subs, inflight, queued}
`)

// EndWithWill ends the session of the connection epoch at its expiry, when
// that comes before the will's delay (see EndHoldingWill): it takes the
// will (nil if none is left) and what the session held (Ended: its
// subscriptions, for their tombstones, and its shared subscriptions'
// undelivered messages, for another member, kept until handed back: see
// Ended.Kept), and deletes the session, in one atomic step. ErrFenced:
// the client connected again since, and the new connection owns session
// and will.
func (s *Store) EndWithWill(ctx context.Context, clientID string, epoch uint64) (*Will, Ended, error) {
	v, err := endWithWillScript.Run(ctx, s.rdb, sessionKeys(clientID), epochArg(epoch)).Slice()
	if err != nil {
		return nil, Ended{}, fmt.Errorf("ending session %s with its will: %w", clientID, mapErr(err))
	}
	if len(v) != 5 && len(v) != 6 {
		return nil, Ended{}, fmt.Errorf("ending session %s with its will: unexpected reply %v", clientID, v)
	}
	will, _ := v[0].(string)
	node, _ := v[1].(string)
	if node != "" {
		s.forgetAll(ctx, map[string][]any{node: {clientID}})
	}
	ended := s.parseEnded(ctx, clientID, v[2], v[3], v[4])
	if ended.Kept = len(v) == 6; ended.Kept {
		// The sweep must find what the end kept.
		if err := s.rdb.ZAdd(ctx, expiringKey, redis.Z{Score: float64(s.now().UnixMilli()), Member: clientID}).Err(); err != nil {
			s.log.WarnContext(ctx, "listing an ended session's kept shared messages for the expiry sweep", "client_id", clientID, "err", err)
		}
	}
	if will == "" {
		return nil, ended, nil
	}
	var w Will
	if err := json.Unmarshal([]byte(will), &w); err != nil {
		return nil, ended, fmt.Errorf("ending session %s with its will: %w", clientID, errors.Join(errors.New("malformed will"), err))
	}
	return &w, ended, nil
}

var returnWillScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
if redis.call('HEXISTS', KEYS[1], 'will') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'will', ARGV[2])
return 1
`)

// ReturnWill puts a will that ClaimWill handed out back into the session,
// for a claimer that could not publish it (Kafka refused it), so that a later
// claim publishes it instead of it being lost. It is fenced by the epoch the
// will was claimed with: a client that reconnected since has a will of its
// own, and the old one is dropped (ErrFenced). The session is added back to
// node's index first, as Connect does, so a crash in between leaves a stale
// index entry, never a will no sweeper can find.
func (s *Store) ReturnWill(ctx context.Context, node, clientID string, epoch uint64, w *Will) error {
	b, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encoding will of %s: %w", clientID, err)
	}
	if err := s.rdb.SAdd(ctx, nodeSessionsKey(node), clientID).Err(); err != nil {
		return fmt.Errorf("indexing session %s on node %s: %w", clientID, node, err)
	}
	if err := returnWillScript.Run(ctx, s.rdb, []string{sessionKey(clientID)}, epochArg(epoch), string(b)).Err(); err != nil {
		return fmt.Errorf("returning will of %s: %w", clientID, mapErr(err))
	}
	return nil
}
