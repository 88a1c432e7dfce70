package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// IsReceived reports whether the inbound QoS 2 packet id of clientID was
// marked received (MarkReceived) and not yet released: a PUBLISH resent with
// DUP set for that id, on any node, must then be answered with PUBREC and not
// produced again [MQTT-4.3.3-10]. It only reads, so it is not fenced.
func (s *Store) IsReceived(ctx context.Context, clientID string, packetID uint16) (bool, error) {
	ok, err := s.rdb.SIsMember(ctx, relKey(clientID), packetID).Result()
	if err != nil {
		return false, fmt.Errorf("checking QoS 2 packet %d of %s: %w", packetID, clientID, err)
	}
	return ok, nil
}

var ackManyScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
local n = 0
for i = 2, #ARGV do n = n + redis.call('HDEL', KEYS[2], ARGV[i]) end
return n
`)

// AckMany deletes the inflight messages packetIDs in one round trip, like
// Ack for each of them.
func (s *Store) AckMany(ctx context.Context, clientID string, epoch uint64, packetIDs []uint16) error {
	if len(packetIDs) == 0 {
		return nil
	}
	args := make([]any, 1, 1+len(packetIDs))
	args[0] = epochArg(epoch)
	for _, id := range packetIDs {
		args = append(args, id)
	}
	err := ackManyScript.Run(ctx, s.rdb, []string{sessionKey(clientID), inflightKey(clientID)}, args...).Err()
	if err != nil {
		return fmt.Errorf("acknowledging %d messages of %s: %w", len(packetIDs), clientID, mapErr(err))
	}
	return nil
}

// Connected reports, for each of clientIDs, whether its session is connected
// to a node right now, in one pipelined round trip. It only reads.
func (s *Store) Connected(ctx context.Context, clientIDs []string) ([]bool, error) {
	cmds := make([]*redis.StringCmd, len(clientIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range clientIDs {
			cmds[i] = p.HGet(ctx, sessionKey(id), "connected")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading presence of %d sessions: %w", len(clientIDs), err)
	}
	out := make([]bool, len(clientIDs))
	for i, c := range cmds {
		out[i] = c.Val() == "1"
	}
	return out, nil
}

// AckAfterClose deletes the inflight messages packetIDs without checking
// the epoch: for acknowledgements a connection read just before it closed,
// which a reconnect (a new epoch) may overtake. Outbound packet ids come
// from a per-session counter, so an id acknowledged this way names the same
// message, whichever connection sent it since.
func (s *Store) AckAfterClose(ctx context.Context, clientID string, packetIDs []uint16) error {
	if len(packetIDs) == 0 {
		return nil
	}
	ids := make([]string, len(packetIDs))
	for i, id := range packetIDs {
		ids[i] = strconv.Itoa(int(id))
	}
	if err := s.rdb.HDel(ctx, inflightKey(clientID), ids...).Err(); err != nil {
		return fmt.Errorf("acknowledging %d messages of %s: %w", len(packetIDs), clientID, err)
	}
	return nil
}
