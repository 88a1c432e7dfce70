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
	Notify(ctx context.Context, clientIDs []string) error
}

// NopNotifier notifies nobody.
type NopNotifier struct{}

// Notify does nothing.
func (NopNotifier) Notify(context.Context, []string) error { return nil }

// NotifyChannel is the Redis pub/sub channel RedisNotifier publishes on.
//
// Every frontend subscribes to it and picks the client ids it serves. One
// channel for the whole cluster costs every node every notice; per-node
// channels (fg:notify:{node}, the node from the session hash) come later,
// once the dispatcher learns session owners without an extra read.
const NotifyChannel = "fg:notify"

// RedisNotifier publishes one notice per routed batch on NotifyChannel. The
// payload is the client ids separated by U+0000, which an MQTT client id
// cannot contain [MQTT-1.5.4-2]; see ParseNotice.
type RedisNotifier struct {
	rdb redis.UniversalClient
}

// NewRedisNotifier returns a notifier publishing through rdb, which the
// caller owns.
func NewRedisNotifier(rdb redis.UniversalClient) *RedisNotifier {
	return &RedisNotifier{rdb: rdb}
}

// Notify publishes clientIDs on NotifyChannel.
func (n *RedisNotifier) Notify(ctx context.Context, clientIDs []string) error {
	if len(clientIDs) == 0 {
		return nil
	}
	if err := n.rdb.Publish(ctx, NotifyChannel, strings.Join(clientIDs, "\x00")).Err(); err != nil {
		return fmt.Errorf("publishing to %s: %w", NotifyChannel, err)
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
