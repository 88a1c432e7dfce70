package session

import (
	"context"
	"errors"
	"fmt"

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
