package handoff

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Sharded reports whether the channels go over Redis Cluster's sharded
// pub/sub (SPUBLISH, SSUBSCRIBE; Redis 7): a message then travels only
// within the shard that owns its channel's slot. Classic PUBLISH is
// broadcast to every node of a cluster, so each notice would cost every
// shard, and the cost of notices would grow with the number of shards. A
// single Redis keeps classic pub/sub, which Redis 6 has too.
func Sharded(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

// Publish sends payload on channel (NotifyChannel, ControlChannel), over
// sharded pub/sub on Redis Cluster (Sharded).
func Publish(ctx context.Context, rdb redis.UniversalClient, channel, payload string) error {
	if Sharded(rdb) {
		return rdb.SPublish(ctx, channel, payload).Err()
	}
	return rdb.Publish(ctx, channel, payload).Err()
}

// Subscribe listens on channels, over sharded pub/sub on Redis Cluster
// (Sharded): there each channel gets a subscription of its own, since
// channels in different slots may live on different shards. The caller
// closes every one.
func Subscribe(ctx context.Context, rdb redis.UniversalClient, channels ...string) []*redis.PubSub {
	if !Sharded(rdb) {
		return []*redis.PubSub{rdb.Subscribe(ctx, channels...)}
	}
	out := make([]*redis.PubSub, len(channels))
	for i, ch := range channels {
		out[i] = rdb.SSubscribe(ctx, ch)
	}
	return out
}

// Subscribed reports whether m, from a subscription Subscribe made, says
// the subscription is (again) in place: messages sent while it was down
// are lost.
func Subscribed(m *redis.Subscription) bool {
	return m.Kind == "subscribe" || m.Kind == "ssubscribe"
}
