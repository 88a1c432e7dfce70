package dispatch

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/handoff"
)

// Notifier tells frontends that sessions have new messages queued. It is
// best effort: a lost notice only delays a delivery until the frontend polls
// its sessions' queues.
type Notifier interface {
	// Notify tells node that clientIDs, sessions connected to it, got
	// messages.
	Notify(ctx context.Context, node string, n handoff.Notice) error
}

// NopNotifier notifies nobody.
type NopNotifier struct{}

// Notify does nothing.
func (NopNotifier) Notify(context.Context, string, handoff.Notice) error { return nil }

// RedisNotifier publishes one notice per node and routed chunk on
// handoff.NotifyChannel(node). A notice of queued sessions only is their client ids
// separated by U+0000, which an MQTT client id cannot contain
// [MQTT-1.5.4-2]; one that carries direct messages starts with U+0000 and
// is binary (see handoff.ParseNotice).
type RedisNotifier struct {
	rdb redis.UniversalClient
}

// NewRedisNotifier returns a notifier publishing through rdb, which the
// caller owns.
func NewRedisNotifier(rdb redis.UniversalClient) *RedisNotifier {
	return &RedisNotifier{rdb: rdb}
}

// Notify publishes n on handoff.NotifyChannel(node).
func (r *RedisNotifier) Notify(ctx context.Context, node string, n handoff.Notice) error {
	if len(n.ClientIDs) == 0 && len(n.Direct) == 0 {
		return nil
	}
	if err := handoff.Publish(ctx, r.rdb, handoff.NotifyChannel(node), handoff.EncodeNotice(n)); err != nil {
		return fmt.Errorf("publishing to %s: %w", handoff.NotifyChannel(node), err)
	}
	return nil
}
