package dispatch

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Notifier tells frontends that sessions have new messages queued. It is
// best effort: a lost notice only delays a delivery until the frontend polls
// its sessions' queues.
type Notifier interface {
	// Notify tells node that clientIDs, sessions connected to it, got
	// messages.
	Notify(ctx context.Context, node string, clientIDs []string) error
}

// NopNotifier notifies nobody.
type NopNotifier struct{}

// Notify does nothing.
func (NopNotifier) Notify(context.Context, string, []string) error { return nil }

// NotifyChannel is the Redis pub/sub channel of node's notices: each
// frontend subscribes to its own. The dispatcher learns the node of every
// connected session from the enqueue itself (session.EnqueueResult.Node),
// so a notice costs only the node that holds the session.
func NotifyChannel(node string) string { return "fg:notify:" + node }

// RedisNotifier publishes one notice per node and routed chunk on
// NotifyChannel(node). The payload is the client ids separated by U+0000,
// which an MQTT client id cannot contain [MQTT-1.5.4-2]; see ParseNotice.
type RedisNotifier struct {
	rdb redis.UniversalClient
}

// NewRedisNotifier returns a notifier publishing through rdb, which the
// caller owns.
func NewRedisNotifier(rdb redis.UniversalClient) *RedisNotifier {
	return &RedisNotifier{rdb: rdb}
}

// Notify publishes clientIDs on NotifyChannel(node).
func (n *RedisNotifier) Notify(ctx context.Context, node string, clientIDs []string) error {
	if len(clientIDs) == 0 {
		return nil
	}
	if err := n.rdb.Publish(ctx, NotifyChannel(node), strings.Join(clientIDs, "\x00")).Err(); err != nil {
		return fmt.Errorf("publishing to %s: %w", NotifyChannel(node), err)
	}
	return nil
}

// ParseNotice returns the client ids of a RedisNotifier payload.
func ParseNotice(payload string) []string {
	if payload == "" {
		return nil
	}
	return strings.Split(payload, "\x00")
}
