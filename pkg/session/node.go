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

// Heartbeat marks node alive for node.liveness-ttl.
func (s *Store) Heartbeat(ctx context.Context, node string) error {
	if err := s.rdb.Set(ctx, nodeKey(node), s.now().UnixMilli(), s.cfg.LivenessTTL).Err(); err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", node, err)
	}
	return nil
}

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
// failing for node.liveness-ttl, other processes consider the node dead and
// publish its clients' wills, so the node should stop serving clients when
// Redis stays unreachable that long.
func (s *Store) RunHeartbeat(ctx context.Context, node string) error {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if err := s.Heartbeat(ctx, node); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "node heartbeat failed", "node", node, "err", err)
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
				cmds[i] = p.HMGet(ctx, sessionKey(id), "node", "epoch", "connected", "will")
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading sessions of node %s: %w", node, err)
		}
		var stale []any
		for i, c := range cmds {
			v := c.Val()
			owner, _ := v[0].(string)
			epochS, _ := v[1].(string)
			epoch, perr := strconv.ParseUint(epochS, 10, 64)
			o := OwnedSession{ClientID: ids[i], Epoch: epoch, Connected: v[2] == "1", HasWill: v[3] != nil}
			if owner != node || perr != nil || (!o.Connected && !o.HasWill) {
				stale = append(stale, ids[i])
				continue
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
		s.forget(ctx, v[2], clientID)
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
