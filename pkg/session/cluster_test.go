package session

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEveryOperationWorksOnRedisCluster runs each operation through a
// cluster client against a cluster-mode server, which refuses any script or
// command whose keys span slots (CROSSSLOT): the hash tags must hold.
func TestEveryOperationWorksOnRedisCluster(t *testing.T) {
	s, _ := newTestStore(t, func(c *Config) {
		c.Redis.Addrs = []string{testRedis.ClusterAddr}
		c.Redis.Cluster = true
	})
	ctx := testCtx(t)
	a, b, nobody, node := clientID(t, "a"), clientID(t, "}b{"), clientID(t, "nobody"), clientID(t, "node")

	ra, err := s.Connect(ctx, ConnectRequest{ClientID: a, Node: node, ExpirySeconds: 60, Protocol: 5, Will: &Will{Topic: "w"}})
	require.NoError(t, err)
	rb, err := s.Connect(ctx, ConnectRequest{ClientID: b, Node: node, CleanStart: true, Protocol: 4})
	require.NoError(t, err)
	rb, err = s.Connect(ctx, ConnectRequest{ClientID: b, Node: node, CleanStart: true, Protocol: 4})
	require.NoError(t, err)

	_, err = s.Subscribe(ctx, a, ra.Epoch, []Subscription{{FilterKey: FilterKey{Filter: "x/#"}, QoS: 1}})
	require.NoError(t, err)
	_, err = s.Unsubscribe(ctx, a, ra.Epoch, []FilterKey{{Filter: "y"}})
	require.NoError(t, err)
	subs, err := s.Subscriptions(ctx, a)
	require.NoError(t, err)
	assert.Len(t, subs, 1)

	res, err := s.Enqueue(ctx, []Delivery{
		{ClientID: a, Message: []byte("1")}, {ClientID: b, Message: []byte("2")}, {ClientID: nobody, Message: []byte("3")},
	})
	require.NoError(t, err)
	assert.Equal(t, []Outcome{OutcomeQueued, OutcomeQueued, OutcomeNoSession}, []Outcome{res[0].Outcome, res[1].Outcome, res[2].Outcome})
	got, err := s.Take(ctx, a, ra.Epoch, 5)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NoError(t, s.PubrecReceived(ctx, a, ra.Epoch, got[0].PacketID))
	inflight, err := s.Inflight(ctx, a)
	require.NoError(t, err)
	assert.Len(t, inflight, 1)
	require.NoError(t, s.Ack(ctx, a, ra.Epoch, got[0].PacketID))
	got, err = s.Take(ctx, b, rb.Epoch, 5)
	require.NoError(t, err)
	assert.Len(t, got, 1)

	already, err := s.MarkReceived(ctx, b, rb.Epoch, 1)
	require.NoError(t, err)
	assert.False(t, already)
	existed, err := s.Released(ctx, b, rb.Epoch, 1)
	require.NoError(t, err)
	assert.True(t, existed)

	require.NoError(t, s.Heartbeat(ctx, node))
	alive, err := s.Alive(ctx, node)
	require.NoError(t, err)
	assert.True(t, alive)
	// The heartbeat's pipeline reads the swept mark (in the liveness
	// key's slot) beside the registry (a slot of its own).
	mark, err := s.heartbeat(ctx, node)
	require.NoError(t, err)
	assert.Empty(t, mark, "not swept")
	require.NoError(t, s.MarkSwept(ctx, node))
	mark, err = s.heartbeat(ctx, node)
	require.NoError(t, err)
	assert.NotEmpty(t, mark, "the heartbeat reads the sweep's mark on Redis Cluster")
	owned, err := s.SessionsOwnedBy(ctx, node)
	require.NoError(t, err)
	assert.Len(t, owned, 2)

	require.NoError(t, s.Disconnect(ctx, a, ra.Epoch, 60))
	w, err := s.ClaimWill(ctx, a, ra.Epoch)
	require.NoError(t, err)
	require.NotNil(t, w)
	require.NoError(t, s.Disconnect(ctx, b, rb.Epoch, 0))
	owned, err = s.SessionsOwnedBy(ctx, node)
	require.NoError(t, err)
	assert.Empty(t, owned)

	// A clean start over a's subscription hands it to Tombstone first;
	// End of a session that ends returns its subscriptions.
	var tombstoned []Subscription
	ra, err = s.Connect(ctx, ConnectRequest{ClientID: a, Node: node, CleanStart: true, Protocol: 5,
		Tombstone: func(_ context.Context, subs []Subscription) error { tombstoned = subs; return nil }})
	require.NoError(t, err)
	assert.Len(t, tombstoned, 1)
	_, err = s.Subscribe(ctx, a, ra.Epoch, []Subscription{{FilterKey: FilterKey{Filter: "z"}}})
	require.NoError(t, err)
	ended, err := s.End(ctx, a, ra.Epoch, 0)
	require.NoError(t, err)
	assert.Len(t, ended.Subscriptions, 1)
	owned, err = s.SessionsOwnedBy(ctx, node)
	require.NoError(t, err)
	assert.Empty(t, owned)
}
