package session

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHeartbeatLapsesAfterTheLivenessTTL(t *testing.T) {
	s, raw := newTestStore(t, nil) // liveness TTL 200ms
	ctx := testCtx(t)
	node := clientID(t, "node")
	alive, err := s.Alive(ctx, node)
	require.NoError(t, err)
	assert.False(t, alive, "a node that never sent a heartbeat is dead")

	require.NoError(t, s.Heartbeat(ctx, node))
	alive, err = s.Alive(ctx, node)
	require.NoError(t, err)
	assert.True(t, alive)
	ttl, err := raw.PTTL(ctx, nodeKey(node)).Result()
	require.NoError(t, err)
	assert.True(t, ttl > 0 && ttl <= 200*time.Millisecond, "TTL %s", ttl)
	require.Eventually(t, func() bool {
		alive, err := s.Alive(ctx, node)
		return err == nil && !alive
	}, 5*time.Second, 10*time.Millisecond)
}

func TestRunHeartbeatKeepsTheNodeAliveUntilCancelled(t *testing.T) {
	s, raw := newTestStore(t, nil) // interval 20ms, TTL 200ms
	node := clientID(t, "node")
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	var swept atomic.Int32
	go func() { done <- s.RunHeartbeat(ctx, node, func() { swept.Add(1) }) }()
	require.Eventually(t, func() bool {
		alive, err := s.Alive(testCtx(t), node)
		return err == nil && alive
	}, 5*time.Second, 10*time.Millisecond)
	// A sweeper that took the node for dead (a pause, a cut to Redis)
	// leaves a mark; the next heartbeat finds it and the node is told
	// once per sweep, not once per heartbeat.
	time.Sleep(100 * time.Millisecond) // five heartbeats
	assert.Zero(t, swept.Load(), "no sweep, no call")
	require.NoError(t, s.MarkSwept(testCtx(t), node))
	require.Eventually(t, func() bool { return swept.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	assert.EqualValues(t, 1, swept.Load(), "one call for one sweep")
	ttl, err := raw.TTL(testCtx(t), sweptKey(node)).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Hour, "the mark outlives any pause worth telling")
	time.Sleep(2 * time.Millisecond) // a later sweep's mark differs
	require.NoError(t, s.MarkSwept(testCtx(t), node))
	require.Eventually(t, func() bool { return swept.Load() == 2 }, 5*time.Second, 5*time.Millisecond, "a second sweep is told too")
	// Refreshed: the TTL keeps coming back up while the loop runs.
	require.Eventually(t, func() bool {
		ttl, err := raw.PTTL(testCtx(t), nodeKey(node)).Result()
		return err == nil && ttl > 150*time.Millisecond
	}, 5*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("RunHeartbeat did not return after cancel")
	}
	require.Eventually(t, func() bool {
		alive, err := s.Alive(testCtx(t), node)
		return err == nil && !alive
	}, 5*time.Second, 10*time.Millisecond)
}

func TestDeadNodesListsNodesWhoseLivenessLapsed(t *testing.T) {
	s, raw := newTestStore(t, nil) // liveness TTL 200ms
	ctx := testCtx(t)
	dead, alive := clientID(t, "dead"), clientID(t, "alive")
	require.NoError(t, s.Heartbeat(ctx, dead))
	require.NoError(t, s.Heartbeat(ctx, alive))
	score, err := raw.ZScore(ctx, nodesKey, dead).Result()
	require.NoError(t, err)
	assert.InDelta(t, float64(time.Now().UnixMilli()), score, 5000, "the registry holds the last heartbeat in unix ms")
	lastSeen := time.UnixMilli(int64(score))

	deadNodes := func() map[string]DeadNode {
		dn, err := s.DeadNodes(ctx)
		require.NoError(t, err)
		m := map[string]DeadNode{}
		for _, d := range dn {
			m[d.Node] = d
		}
		return m
	}
	assert.NotContains(t, deadNodes(), dead, "a node within its liveness TTL is alive")

	// alive keeps sending heartbeats; dead stops.
	hbCtx, stop := context.WithCancel(ctx)
	hbDone := make(chan error, 1)
	go func() { hbDone <- s.RunHeartbeat(hbCtx, alive, nil) }()
	t.Cleanup(func() { stop(); <-hbDone })
	var got DeadNode
	require.Eventually(t, func() bool {
		var ok bool
		got, ok = deadNodes()[dead]
		return ok
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, DeadNode{Node: dead, LastSeen: lastSeen, DeadSince: lastSeen.Add(200 * time.Millisecond)}, got)
	assert.NotContains(t, deadNodes(), alive, "a node that keeps its heartbeat is never dead")

	// A node whose registry score is old but whose liveness key still
	// exists (its clock lags, or the score write was lost) is alive: the
	// liveness key decides.
	lagging := clientID(t, "lagging")
	require.NoError(t, s.Heartbeat(ctx, lagging))
	require.NoError(t, raw.ZAdd(ctx, nodesKey, redis.Z{Score: float64(time.Now().Add(-time.Hour).UnixMilli()), Member: lagging}).Err())
	assert.NotContains(t, deadNodes(), lagging)

	// A dead node that comes back leaves the list by itself, and
	// ForgetNode does not remove it from the registry.
	require.NoError(t, s.Heartbeat(ctx, dead))
	assert.NotContains(t, deadNodes(), dead)
	require.NoError(t, s.ForgetNode(ctx, dead))
	_, err = raw.ZScore(ctx, nodesKey, dead).Result()
	require.NoError(t, err, "a node that sent a heartbeat again stays registered")

	require.Eventually(t, func() bool { _, ok := deadNodes()[dead]; return ok }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, s.ForgetNode(ctx, dead))
	_, err = raw.ZScore(ctx, nodesKey, dead).Result()
	require.ErrorIs(t, err, redis.Nil, "a forgotten node leaves the registry")
	assert.NotContains(t, deadNodes(), dead)
}

func TestReturnWillMakesAClaimedWillClaimableAgain(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	node := clientID(t, "node")
	cid := clientID(t, "c")
	will := &Will{Topic: "w", Payload: []byte("p"), QoS: 1, Username: "alice"}
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: 60, Protocol: 5, Will: will})
	require.NoError(t, err)
	require.NoError(t, s.Disconnect(ctx, cid, res.Epoch, 60))
	w, err := s.ClaimWill(ctx, cid, res.Epoch)
	require.NoError(t, err)
	require.Equal(t, will, w)
	owned, err := s.SessionsOwnedBy(ctx, node)
	require.NoError(t, err)
	assert.Empty(t, owned, "a claimed will leaves nothing for a sweeper")

	require.NoError(t, s.ReturnWill(ctx, node, cid, res.Epoch, w))
	owned, err = s.SessionsOwnedBy(ctx, node)
	require.NoError(t, err)
	require.Len(t, owned, 1, "the returned will is found again")
	assert.True(t, owned[0].HasWill)
	ttl, err := raw.TTL(ctx, sessionKey(cid)).Result()
	require.NoError(t, err)
	assert.True(t, ttl > 0 && ttl <= 60*time.Second, "the session keeps its expiry: %s", ttl)
	w, err = s.ClaimWill(ctx, cid, res.Epoch)
	require.NoError(t, err)
	assert.Equal(t, will, w)

	// After a reconnect the old will is not returned.
	res2, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: 60, Protocol: 5})
	require.NoError(t, err)
	require.ErrorIs(t, s.ReturnWill(ctx, node, cid, res.Epoch, w), ErrFenced)
	w, err = s.ClaimWill(ctx, cid, res2.Epoch)
	require.NoError(t, err)
	assert.Nil(t, w)
}

func TestSessionsOwnedBy(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	node, other := clientID(t, "dead"), clientID(t, "other")
	will := &Will{Topic: "status/offline", Payload: []byte("gone"), QoS: 1, DelaySeconds: 7}
	connectWith := func(cid, node string, w *Will) uint64 {
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: 60, Protocol: 5, Will: w})
		require.NoError(t, err)
		return res.Epoch
	}
	connectedWithWill := clientID(t, "connected-with-will")
	connectedNoWill := clientID(t, "connected-no-will")
	pendingWill := clientID(t, "disconnected-will-pending")
	disconnected := clientID(t, "disconnected-no-will")
	movedAway := clientID(t, "moved-away")
	expired := clientID(t, "expired")

	e1 := connectWith(connectedWithWill, node, will)
	connectWith(connectedNoWill, node, nil)
	e3 := connectWith(pendingWill, node, will)
	require.NoError(t, s.Disconnect(ctx, pendingWill, e3, 60))
	e4 := connectWith(disconnected, node, nil)
	require.NoError(t, s.Disconnect(ctx, disconnected, e4, 60))
	connectWith(movedAway, node, will)
	connectWith(movedAway, other, will)
	connectWith(expired, node, will)
	require.NoError(t, raw.Del(ctx, sessionKeys(expired)...).Err())
	// A crash of the other node between its index update and its script
	// leaves a stale entry; so does a session that expired in Redis.
	require.NoError(t, raw.SAdd(ctx, nodeSessionsKey(node), movedAway).Err())

	got, err := s.SessionsOwnedBy(ctx, node)
	require.NoError(t, err)
	sort.Slice(got, func(i, j int) bool { return got[i].ClientID < got[j].ClientID })
	require.Len(t, got, 3)
	for i, cid := range []string{connectedNoWill, connectedWithWill, pendingWill} {
		info, err := s.Session(ctx, cid)
		require.NoError(t, err)
		assert.Equal(t, info.LastSeen, got[i].LastSeen, "last seen of %s", cid)
		assert.WithinDuration(t, time.Now(), got[i].LastSeen, 5*time.Second)
		got[i].LastSeen = time.Time{}
	}
	assert.Equal(t, []OwnedSession{
		{ClientID: connectedNoWill, Epoch: got[0].Epoch, Connected: true, Protocol: 5, ExpirySeconds: 60},
		{ClientID: connectedWithWill, Epoch: e1, Connected: true, HasWill: true, Protocol: 5, ExpirySeconds: 60, WillDelaySeconds: 7},
		{ClientID: pendingWill, Epoch: e3, HasWill: true, Protocol: 5, ExpirySeconds: 60, WillDelaySeconds: 7},
	}, got)

	members, err := raw.SMembers(ctx, nodeSessionsKey(node)).Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{connectedWithWill, connectedNoWill, pendingWill}, members, "stale entries are removed")

	w, err := s.ClaimWill(ctx, pendingWill, e3)
	require.NoError(t, err)
	assert.Equal(t, will, w)
	members, err = raw.SMembers(ctx, nodeSessionsKey(node)).Result()
	require.NoError(t, err)
	assert.NotContains(t, members, pendingWill, "a disconnected session without a will leaves the index")
}

func TestClaimWillHandsTheWillOutOnce(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	will := &Will{
		Topic: "w/t", Payload: []byte{0, 1, 2}, QoS: 2, Retain: true, DelaySeconds: 5,
		PayloadFormat: 1, MessageExpirySeconds: 60, HasMessageExpiry: true, ContentType: "text/plain",
		ResponseTopic: "r", CorrelationData: []byte("c"), UserProperties: []UserProperty{{"k", "v"}, {"k", "v2"}},
	}
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Will: will})
	require.NoError(t, err)
	info, err := s.Session(ctx, cid)
	require.NoError(t, err)
	assert.True(t, info.HasWill)

	const claimers = 16
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		claims []*Will
	)
	for i := 0; i < claimers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := s.ClaimWill(ctx, cid, res.Epoch)
			assert.NoError(t, err)
			if w != nil {
				mu.Lock()
				claims = append(claims, w)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Len(t, claims, 1, "exactly one claimer gets the will")
	assert.Equal(t, will, claims[0])
	info, err = s.Session(ctx, cid)
	require.NoError(t, err)
	assert.False(t, info.HasWill)
}

func TestClaimWillAfterAReconnectIsFenced(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Will: &Will{Topic: "old"}})
	require.NoError(t, err)
	require.NoError(t, s.Disconnect(ctx, cid, res.Epoch, 60))
	// The client comes back within the will delay with a new will
	// [MQTT-3.1.3-9]: the old connection's claim must fail.
	res2, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60, Will: &Will{Topic: "new"}})
	require.NoError(t, err)
	_, err = s.ClaimWill(ctx, cid, res.Epoch)
	require.True(t, errors.Is(err, ErrFenced))
	w, err := s.ClaimWill(ctx, cid, res2.Epoch)
	require.NoError(t, err)
	require.NotNil(t, w)
	assert.Equal(t, "new", w.Topic)

	// A reconnect without a will removes the stored one.
	res3, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60, Will: &Will{Topic: "x"}})
	require.NoError(t, err)
	res4, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60})
	require.NoError(t, err)
	assert.Greater(t, res4.Epoch, res3.Epoch)
	w, err = s.ClaimWill(ctx, cid, res4.Epoch)
	require.NoError(t, err)
	assert.Nil(t, w)
}

// TestNodeRegistryWorksOnRedisCluster runs the node registry and will
// return through a cluster client against a cluster-mode server, which
// refuses commands whose keys span slots.
func TestNodeRegistryWorksOnRedisCluster(t *testing.T) {
	s, _ := newTestStore(t, func(c *Config) {
		c.Redis.Addrs = []string{testRedis.ClusterAddr}
		c.Redis.Cluster = true
	})
	ctx := testCtx(t)
	node, cid := clientID(t, "}node{"), clientID(t, "c")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: node, ExpirySeconds: 60, Protocol: 5, Will: &Will{Topic: "w"}})
	require.NoError(t, err)
	require.NoError(t, s.Heartbeat(ctx, node))
	require.Eventually(t, func() bool {
		dn, err := s.DeadNodes(ctx)
		require.NoError(t, err)
		for _, d := range dn {
			if d.Node == node {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond)
	w, err := s.ClaimWill(ctx, cid, res.Epoch)
	require.NoError(t, err)
	require.NoError(t, s.ReturnWill(ctx, node, cid, res.Epoch, w))
	require.NoError(t, s.ForgetNode(ctx, node))
}

// TestASessionHeldForItsWillEndsAtItsExpiry: a session whose expiry comes
// before its will's delay keeps its keys past the expiry for the will
// (EndHoldingWill), so that the will is claimed when the session ends and
// not earlier [MQTT-3.1.3-9]; meanwhile it counts as expired.
func TestASessionHeldForItsWillEndsAtItsExpiry(t *testing.T) {
	will := &Will{Topic: "status/c", Payload: []byte("gone"), QoS: 1, DelaySeconds: 3600}
	held := func(t *testing.T) (*Store, *redis.Client, string, uint64) {
		s, raw := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 1, Protocol: 5, Owner: "device-1", Will: will})
		require.NoError(t, err)
		_, err = s.Subscribe(ctx, cid, res.Epoch, []Subscription{{FilterKey: FilterKey{Filter: "cmd/c"}, QoS: 1}})
		require.NoError(t, err)
		subs, err := s.EndHoldingWill(ctx, cid, res.Epoch, 1)
		require.NoError(t, err)
		require.Empty(t, subs.Subscriptions, "the session is kept until its expiry")
		ttl, err := raw.TTL(ctx, sessionKey(cid)).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, WillHold, "the keys outlive the 1 s expiry by the hold")
		return s, raw, cid, res.Epoch
	}

	t.Run("the claim at the expiry takes the will and ends the session", func(t *testing.T) {
		s, raw, cid, epoch := held(t)
		ctx := testCtx(t)
		w, ended, err := s.EndWithWill(ctx, cid, epoch)
		require.NoError(t, err)
		assert.Equal(t, will, w)
		require.Len(t, ended.Subscriptions, 1)
		assert.Equal(t, "cmd/c", ended.Subscriptions[0].Filter)
		assert.Empty(t, ended.Shared)
		n, err := raw.Exists(ctx, sessionKeys(cid)...).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "every key of the session is gone")
		_, _, err = s.EndWithWill(ctx, cid, epoch)
		assert.ErrorIs(t, err, ErrNoSession)
	})
	t.Run("a CONNECT after the expiry gets the will and a new session, whoever connects", func(t *testing.T) {
		s, _, cid, epoch := held(t)
		ctx := testCtx(t)
		time.Sleep(1100 * time.Millisecond) // past the expiry, within the hold
		var tombstoned []Subscription
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60, Protocol: 5, Owner: "device-2",
			Tombstone: func(_ context.Context, subs []Subscription) error { tombstoned = subs; return nil }})
		require.NoError(t, err, "an expired session belongs to nobody")
		assert.False(t, res.SessionPresent)
		assert.False(t, res.WasConnected)
		assert.Nil(t, res.TakenOverWill)
		assert.Equal(t, will, res.EndedWill, "the session's end made its will due")
		require.Len(t, tombstoned, 1, "its subscriptions are tombstoned first")
		got, err := s.Subscriptions(ctx, cid)
		require.NoError(t, err)
		assert.Empty(t, got)
		_, _, err = s.EndWithWill(ctx, cid, epoch)
		assert.ErrorIs(t, err, ErrFenced, "the claim scheduled at the expiry is fenced: the will is published once")
	})
	t.Run("a CONNECT before the expiry resumes the session and cancels the will", func(t *testing.T) {
		s, _, cid, epoch := held(t)
		ctx := testCtx(t)
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5, Owner: "device-1"})
		require.NoError(t, err)
		assert.True(t, res.SessionPresent)
		assert.Nil(t, res.EndedWill)
		_, _, err = s.EndWithWill(ctx, cid, epoch)
		assert.ErrorIs(t, err, ErrFenced)
	})
}

// TestAWillDueBeforeTheExpiryKeepsTheKeysForItsSweep: a session whose will
// is due at its delay, before the session expires, keeps its keys at least
// WillHold past the delay (EndKeepingWill), so that a sweeper that finds its
// node dead after a short expiry still has the will; a long expiry is not
// lengthened. After the expiry the session counts as expired all the same.
func TestAWillDueBeforeTheExpiryKeepsTheKeysForItsSweep(t *testing.T) {
	will := &Will{Topic: "status/c", Payload: []byte("gone"), QoS: 1, DelaySeconds: 1}
	for _, tc := range []struct {
		name     string
		expiry   uint32
		min, max time.Duration
	}{
		{"a 2 s expiry is kept the will's delay and the hold", 2, WillHold, WillHold + 2*time.Second},
		{"a 1-hour expiry is kept as it is", 3600, time.Hour - 10*time.Second, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, raw := newTestStore(t, nil)
			ctx := testCtx(t)
			cid := clientID(t, "c")
			res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: tc.expiry, Protocol: 5, Owner: "device-1", Will: will})
			require.NoError(t, err)
			subs, err := s.EndKeepingWill(ctx, cid, res.Epoch, tc.expiry, will.DelaySeconds)
			require.NoError(t, err)
			require.Empty(t, subs.Subscriptions, "the session is kept until its expiry")
			for _, k := range sessionKeys(cid) {
				ttl, err := raw.TTL(ctx, k).Result()
				require.NoError(t, err)
				if ttl == -2*time.Nanosecond {
					continue // a key the session never wrote (its queue)
				}
				assert.GreaterOrEqual(t, ttl, tc.min, "%s", k)
				assert.LessOrEqual(t, ttl, tc.max, "%s", k)
			}
		})
	}
	t.Run("past the short expiry a CONNECT finds the session expired and gets its will", func(t *testing.T) {
		s, _ := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 2, Protocol: 5, Owner: "device-1", Will: will})
		require.NoError(t, err)
		_, err = s.EndKeepingWill(ctx, cid, res.Epoch, 2, will.DelaySeconds)
		require.NoError(t, err)
		time.Sleep(2100 * time.Millisecond) // past the expiry, within the hold
		res, err = s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60, Protocol: 5, Owner: "device-2"})
		require.NoError(t, err, "an expired session belongs to nobody")
		assert.False(t, res.SessionPresent)
		assert.Equal(t, will, res.EndedWill, "the will nobody published is handed over")
	})
}

// TestASharedMemberEndedWithItsWillReturnsItsSharedMessages: a session
// that ends at its expiry with a will due later (EndWithWill) returns what
// it held through a shared subscription, like any end.
func TestASharedMemberEndedWithItsWillReturnsItsSharedMessages(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "member")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 1, Protocol: 5,
		Will: &Will{Topic: "status/c", DelaySeconds: 3600}})
	require.NoError(t, err)
	_, err = s.Subscribe(ctx, cid, res.Epoch, []Subscription{{FilterKey: FilterKey{Group: "g", Filter: "jobs/#"}, QoS: 1}})
	require.NoError(t, err)
	_, err = s.EndHoldingWill(ctx, cid, res.Epoch, 1)
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("\x02job")}, {ClientID: cid, Message: []byte("\x01own")}})
	require.NoError(t, err)
	w, ended, err := s.EndWithWill(ctx, cid, res.Epoch)
	require.NoError(t, err)
	require.NotNil(t, w)
	require.Len(t, ended.Shared, 1)
	assert.Equal(t, "\x02job", string(ended.Shared[0].Message))

	// They stay in Redis until handed back, listed for the expiry sweep.
	assert.True(t, ended.Kept)
	left, err := s.ExpiredShared(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, ended.Shared, left)
	at, err := raw.ZScore(ctx, expiringKey, cid).Result()
	require.NoError(t, err, "listed for the expiry sweep")
	assert.LessOrEqual(t, at, float64(time.Now().UnixMilli()), "due at once")
	require.NoError(t, s.DiscardExpired(ctx, cid))
	n, err := raw.Exists(ctx, sessionKeys(cid)...).Result()
	require.NoError(t, err)
	assert.Zero(t, n)
}
