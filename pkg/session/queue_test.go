package session

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/config"
)

func msgs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestEnqueueBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   QueueFullPolicy
		maxMsgs  int
		maxBytes int64
		send     []string
		want     []Outcome
		evicted  []int
		wantLeft []string
	}{
		{
			name: "drop-oldest evicts the oldest message at the message bound", policy: DropOldest, maxMsgs: 3, maxBytes: 1 << 20,
			send:     []string{"a", "b", "c", "d", "e"},
			want:     []Outcome{OutcomeQueued, OutcomeQueued, OutcomeQueued, OutcomeDroppedOldest, OutcomeDroppedOldest},
			evicted:  []int{0, 0, 0, 1, 1},
			wantLeft: []string{"c", "d", "e"},
		},
		{
			name: "drop-newest refuses new messages at the message bound", policy: DropNewest, maxMsgs: 3, maxBytes: 1 << 20,
			send:     []string{"a", "b", "c", "d", "e"},
			want:     []Outcome{OutcomeQueued, OutcomeQueued, OutcomeQueued, OutcomeDroppedNewest, OutcomeDroppedNewest},
			evicted:  []int{0, 0, 0, 0, 0},
			wantLeft: []string{"a", "b", "c"},
		},
		{
			name: "drop-oldest evicts as many messages as the byte bound needs", policy: DropOldest, maxMsgs: 100, maxBytes: 10,
			send:     []string{"aaa", "bbb", "ccc", "dddddd"},
			want:     []Outcome{OutcomeQueued, OutcomeQueued, OutcomeQueued, OutcomeDroppedOldest},
			evicted:  []int{0, 0, 0, 2},
			wantLeft: []string{"ccc", "dddddd"},
		},
		{
			name: "drop-newest refuses a message that would pass the byte bound", policy: DropNewest, maxMsgs: 100, maxBytes: 10,
			send:     []string{"aaa", "bbb", "ccc", "dddddd", "e"},
			want:     []Outcome{OutcomeQueued, OutcomeQueued, OutcomeQueued, OutcomeDroppedNewest, OutcomeQueued},
			evicted:  []int{0, 0, 0, 0, 0},
			wantLeft: []string{"aaa", "bbb", "ccc", "e"},
		},
		{
			name: "a message larger than the byte bound is dropped even with drop-oldest", policy: DropOldest, maxMsgs: 100, maxBytes: 10,
			send:     []string{"aaa", "0123456789X"},
			want:     []Outcome{OutcomeQueued, OutcomeDroppedNewest},
			evicted:  []int{0, 0},
			wantLeft: []string{"aaa"},
		},
		{
			name: "a message that exactly fills the byte bound is queued", policy: DropNewest, maxMsgs: 100, maxBytes: 10,
			send:     []string{"0123456789"},
			want:     []Outcome{OutcomeQueued},
			evicted:  []int{0},
			wantLeft: []string{"0123456789"},
		},
	} {
		// One delivery per call, and all of them in one call (one script
		// run for the session): the outcomes are the same.
		for _, oneCall := range []bool{false, true} {
			name := tc.name
			if oneCall {
				name += " (one call)"
			}
			t.Run(name, func(t *testing.T) {
				s, _ := newTestStore(t, func(c *Config) {
					c.QueueFullPolicy = tc.policy
					c.MaxQueuedMessages = tc.maxMsgs
					c.MaxQueuedBytes = configBytes(tc.maxBytes)
				})
				ctx := testCtx(t)
				cid := clientID(t, "c")
				epoch := connect(t, s, cid, "n1")
				var res []EnqueueResult
				if oneCall {
					ds := make([]Delivery, len(tc.send))
					for i, m := range tc.send {
						ds[i] = Delivery{ClientID: cid, Message: []byte(m)}
					}
					var err error
					res, err = s.Enqueue(ctx, ds)
					require.NoError(t, err)
				} else {
					for _, m := range tc.send {
						r, err := s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte(m)}})
						require.NoError(t, err)
						res = append(res, r...)
					}
				}
				require.Len(t, res, len(tc.send))
				for i, m := range tc.send {
					assert.Equal(t, tc.want[i], res[i].Outcome, "message %d %q", i, m)
					assert.Equal(t, tc.evicted[i], res[i].Evicted, "message %d %q", i, m)
				}
				var wantBytes int64
				for _, m := range tc.wantLeft {
					wantBytes += int64(len(m))
				}
				info, err := s.Session(ctx, cid)
				require.NoError(t, err)
				assert.Equal(t, wantBytes, info.QueuedBytes)
				got, err := s.Take(ctx, cid, epoch, 1000)
				require.NoError(t, err)
				assert.Equal(t, tc.wantLeft, messages(got))
				info, err = s.Session(ctx, cid)
				require.NoError(t, err)
				assert.Zero(t, info.QueuedBytes, "taking everything empties the byte count")
			})
		}
	}
}

func configBytes(n int64) config.ByteSize { return config.ByteSize(n) }

func messages(ms []QueuedMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Message)
	}
	return out
}

func TestEnqueueForManyClientsInOnePipeline(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	a, b, nobody := clientID(t, "a"), clientID(t, "b"), clientID(t, "nobody")
	ea := connect(t, s, a, "n1")
	eb := connect(t, s, b, "n2")
	// The script cache may be empty (a Redis restart or failover): Enqueue
	// loads the script and retries.
	require.NoError(t, raw.ScriptFlush(ctx).Err())
	res, err := s.Enqueue(ctx, []Delivery{
		{ClientID: a, Message: []byte("a1")},
		{ClientID: nobody, Message: []byte("n1")},
		{ClientID: b, Message: []byte("b1")},
		{ClientID: a, Message: []byte("a2")},
	})
	require.NoError(t, err)
	outcomes := make([]Outcome, len(res))
	for i, r := range res {
		outcomes[i] = r.Outcome
	}
	assert.Equal(t, []Outcome{OutcomeQueued, OutcomeNoSession, OutcomeQueued, OutcomeQueued}, outcomes)
	n, err := raw.Exists(ctx, sessionKeys(nobody)...).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a delivery to a client without a session created keys")
	got, err := s.Take(ctx, a, ea, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"a1", "a2"}, messages(got))
	got, err = s.Take(ctx, b, eb, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"b1"}, messages(got))
	assert.Equal(t, "no_session", OutcomeNoSession.String())
}

func TestTakeAckAndInflight(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	binary := []byte("bin|\x00\xff|")
	_, err := s.Enqueue(ctx, []Delivery{
		{ClientID: cid, Message: []byte("m0")},
		{ClientID: cid, Message: []byte("m1"), Expiry: time.Now().Add(time.Hour)},
		{ClientID: cid, Message: binary},
		{ClientID: cid, Message: []byte("m3")},
	})
	require.NoError(t, err)

	got, err := s.Take(ctx, cid, epoch, 3)
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.Equal(t, []uint16{1, 2, 3}, packetIDs(got), "ids start at 1, never 0 [MQTT-2.2.1-3]")
	assert.True(t, got[0].Expiry.IsZero())
	assert.WithinDuration(t, time.Now().Add(time.Hour), got[1].Expiry, 5*time.Second)
	assert.True(t, bytes.Equal(binary, got[2].Message), "binary messages survive")

	require.NoError(t, s.Ack(ctx, cid, epoch, 2))
	require.NoError(t, s.Ack(ctx, cid, epoch, 2), "acking an unknown id is harmless")
	inflight, err := s.Inflight(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []uint16{1, 3}, inflightIDs(inflight))

	// Move the counter near the end of the id space: the next ids wrap past
	// 65535, skip 0 and skip ids still in flight (1 and 3).
	require.NoError(t, raw.HSet(ctx, sessionKey(cid), "pid", 65534).Err())
	_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("m4")}, {ClientID: cid, Message: []byte("m5")}})
	require.NoError(t, err)
	got, err = s.Take(ctx, cid, epoch, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"m3", "m4", "m5"}, messages(got))
	assert.Equal(t, []uint16{65535, 2, 4}, packetIDs(got))

	// Inflight lists in assignment order, not id order.
	require.NoError(t, s.PubrecReceived(ctx, cid, epoch, 3))
	inflight, err = s.Inflight(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []uint16{1, 3, 65535, 2, 4}, inflightIDs(inflight))
	assert.Equal(t, "m0", string(inflight[0].Message))
	assert.False(t, inflight[0].Released)
	assert.True(t, inflight[1].Released, "PUBREC received: resend PUBREL")
	assert.Empty(t, inflight[1].Message)
	assert.Equal(t, "m4", string(inflight[3].Message))

	for _, id := range []uint16{1, 3, 65535, 2, 4} {
		require.NoError(t, s.Ack(ctx, cid, epoch, id))
	}
	inflight, err = s.Inflight(ctx, cid)
	require.NoError(t, err)
	assert.Empty(t, inflight)
	got, err = s.Take(ctx, cid, epoch, 10)
	require.NoError(t, err)
	assert.Empty(t, got, "taking from an empty queue returns nothing")
}

func TestTakeSkipsExpiredMessages(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	s, _ := newTestStore(t, nil, WithClock(func() time.Time { return time.UnixMilli(now.Load()) }))
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	base := time.UnixMilli(now.Load())
	_, err := s.Enqueue(ctx, []Delivery{
		{ClientID: cid, Message: []byte("gone"), Expiry: base.Add(-time.Millisecond)},
		{ClientID: cid, Message: []byte("keeps"), Expiry: base.Add(time.Minute)},
		{ClientID: cid, Message: []byte("expires later"), Expiry: base.Add(time.Second)},
		{ClientID: cid, Message: []byte("never")},
	})
	require.NoError(t, err)
	got, err := s.Take(ctx, cid, epoch, 1)
	require.NoError(t, err)
	assert.Equal(t, []string{"keeps"}, messages(got), "an expired head is skipped and does not count")
	now.Add(2000)
	got, err = s.Take(ctx, cid, epoch, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"never"}, messages(got))
	info, err := s.Session(ctx, cid)
	require.NoError(t, err)
	assert.Zero(t, info.QueuedBytes)
}

func TestTakeStopsWhenEveryPacketIDIsInFlight(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	// Fill the inflight hash directly; taking 65535 messages would be slow.
	fields := make([]any, 0, 2*65535)
	for id := 1; id <= 65535; id++ {
		fields = append(fields, id, fmt.Sprintf("%d|P|0|x", id))
	}
	require.NoError(t, raw.HSet(ctx, inflightKey(cid), fields...).Err())
	_, err := s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("waits")}})
	require.NoError(t, err)
	got, err := s.Take(ctx, cid, epoch, 5)
	require.NoError(t, err)
	assert.Empty(t, got)
	require.NoError(t, s.Ack(ctx, cid, epoch, 777))
	got, err = s.Take(ctx, cid, epoch, 5)
	require.NoError(t, err)
	assert.Equal(t, []uint16{777}, packetIDs(got))
	assert.Equal(t, []string{"waits"}, messages(got))
}

func packetIDs(ms []QueuedMessage) []uint16 {
	out := make([]uint16, len(ms))
	for i, m := range ms {
		out[i] = m.PacketID
	}
	return out
}

func inflightIDs(ms []InflightMessage) []uint16 {
	out := make([]uint16, len(ms))
	for i, m := range ms {
		out[i] = m.PacketID
	}
	return out
}

func TestEntryEncodingRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    string
		expiry time.Time
	}{
		{"a message without expiry", "hello", time.Time{}},
		{"a message with separators in it", "a|b||c", time.UnixMilli(1700000000123)},
		{"an empty message", "", time.UnixMilli(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := encodeEntry([]byte(tc.msg), tc.expiry)
			m, exp, err := decodeEntry(e)
			require.NoError(t, err)
			assert.Equal(t, tc.msg, string(m))
			assert.True(t, tc.expiry.Equal(exp), "%v != %v", tc.expiry, exp)
			assert.True(t, strings.HasSuffix(e, "|"+tc.msg))
		})
	}
	_, _, err := decodeEntry("garbage")
	assert.Error(t, err)
}

func TestEnqueueReportsFailuresPerDelivery(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	res, err := s.Enqueue(ctx, []Delivery{{ClientID: clientID(t, "a"), Message: []byte("m")}, {ClientID: clientID(t, "b")}})
	require.Error(t, err)
	require.Len(t, res, 2)
	for _, r := range res {
		assert.Equal(t, OutcomeFailed, r.Outcome)
		assert.Error(t, r.Err)
	}
}

func TestEnqueueNamesTheNodeOfConnectedSessionsOnly(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	on, off := clientID(t, "on"), clientID(t, "off")
	connect(t, s, on, "node-7")
	e := connect(t, s, off, "node-8")
	require.NoError(t, s.Disconnect(ctx, off, e, 3600))
	res, err := s.Enqueue(ctx, []Delivery{{ClientID: on, Message: []byte("m")}, {ClientID: off, Message: []byte("m")}})
	require.NoError(t, err)
	assert.Equal(t, OutcomeQueued, res[0].Outcome)
	assert.Equal(t, "node-7", res[0].Node, "the dispatcher notifies the node holding the session")
	assert.Equal(t, OutcomeQueued, res[1].Outcome)
	assert.Empty(t, res[1].Node, "a disconnected session needs no notice")
}

func TestEnqueueChecksTheSessionStillHoldsTheSubscription(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	e := connect(t, s, cid, "n1")
	_, err := s.Subscribe(ctx, cid, e, []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}, {FilterKey: FilterKey{Group: "g", Filter: "jobs"}, QoS: 1}})
	require.NoError(t, err)
	res, err := s.Enqueue(ctx, []Delivery{
		{ClientID: cid, Message: []byte("held"), Subscriptions: []FilterKey{{Filter: "a/+"}, {Filter: "a/#"}}},
		{ClientID: cid, Message: []byte("shared"), Subscriptions: []FilterKey{{Group: "g", Filter: "jobs"}}},
		{ClientID: cid, Message: []byte("gone"), Subscriptions: []FilterKey{{Filter: "b/#"}}},
		{ClientID: cid, Message: []byte("unchecked")},
	})
	require.NoError(t, err)
	assert.Equal(t, []Outcome{OutcomeQueued, OutcomeQueued, OutcomeNotSubscribed, OutcomeQueued},
		[]Outcome{res[0].Outcome, res[1].Outcome, res[2].Outcome, res[3].Outcome})
	msgs, err := s.Take(ctx, cid, e, 10)
	require.NoError(t, err)
	var got []string
	for _, m := range msgs {
		got = append(got, string(m.Message))
	}
	assert.Equal(t, []string{"held", "shared", "unchecked"}, got)
}

// TestPendingOfSaysWhichSessionsHaveWork: the poll's read of many sessions
// at once — a queue with messages, the sequence counter after a take, and
// nothing for a fresh session or one that does not exist.
func TestPendingOfSaysWhichSessionsHaveWork(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	idle, queued, taken, none := clientID(t, "idle"), clientID(t, "queued"), clientID(t, "taken"), clientID(t, "none")
	connect(t, s, idle, "n1")
	connect(t, s, queued, "n1")
	epoch := connect(t, s, taken, "n1")
	_, err := s.Enqueue(ctx, []Delivery{{ClientID: queued, Message: []byte("m")}, {ClientID: taken, Message: []byte("m")}})
	require.NoError(t, err)
	got, err := s.Take(ctx, taken, epoch, 10)
	require.NoError(t, err)
	require.Len(t, got, 1)

	p, err := s.PendingOf(ctx, []string{idle, queued, taken, none})
	require.NoError(t, err)
	assert.Equal(t, []Pending{{}, {Queued: true}, {Seq: got[0].Seq}, {}}, p)
	assert.NotZero(t, got[0].Seq)
}

func TestEnqueueHoldingHoldsAConnectedSessionAtItsBoundInsteadOfDropping(t *testing.T) {
	for _, policy := range []QueueFullPolicy{DropOldest, DropNewest} {
		t.Run(string(policy), func(t *testing.T) {
			s, _ := newTestStore(t, func(c *Config) {
				c.QueueFullPolicy = policy
				c.MaxQueuedMessages = 3
			})
			ctx := testCtx(t)
			cid := clientID(t, "c")
			epoch := connect(t, s, cid, "n1")
			all := func(string) bool { return true }
			var ds []Delivery
			for _, m := range []string{"a", "b", "c", "d", "e"} {
				ds = append(ds, Delivery{ClientID: cid, Message: []byte(m)})
			}
			res, err := s.EnqueueHolding(ctx, ds, all)
			require.NoError(t, err)
			assert.Equal(t, []Outcome{OutcomeQueued, OutcomeQueued, OutcomeQueued, OutcomeHeld, OutcomeHeld}, outcomes(res))
			for _, r := range res {
				assert.Zero(t, r.Evicted)
			}

			// The connection takes two; the held ones fit then, in order.
			got, err := s.Take(ctx, cid, epoch, 2)
			require.NoError(t, err)
			assert.Equal(t, []string{"a", "b"}, messages(got))
			res, err = s.EnqueueHolding(ctx, ds[3:], all)
			require.NoError(t, err)
			assert.Equal(t, []Outcome{OutcomeQueued, OutcomeQueued}, outcomes(res))
			got, err = s.Take(ctx, cid, epoch, 10)
			require.NoError(t, err)
			assert.Equal(t, []string{"c", "d", "e"}, messages(got), "nothing lost, nothing out of order")
		})
	}
}

func TestEnqueueHoldingAppliesThePolicyWhereItMustNotHold(t *testing.T) {
	s, _ := newTestStore(t, func(c *Config) { c.MaxQueuedMessages = 2 })
	ctx := testCtx(t)
	on, off, refused := clientID(t, "on"), clientID(t, "off"), clientID(t, "refused")
	connect(t, s, on, "n1")
	connect(t, s, refused, "n1")
	e := connect(t, s, off, "n1")
	require.NoError(t, s.Disconnect(ctx, off, e, 3600))
	var ds []Delivery
	for _, cid := range []string{on, off, refused} {
		for _, m := range []string{"a", "b", "c"} {
			ds = append(ds, Delivery{ClientID: cid, Message: []byte(m)})
		}
	}
	res, err := s.EnqueueHolding(ctx, ds, func(cid string) bool { return cid != refused })
	require.NoError(t, err)
	assert.Equal(t, []Outcome{
		OutcomeQueued, OutcomeQueued, OutcomeHeld, // connected: held
		OutcomeQueued, OutcomeQueued, OutcomeDroppedOldest, // disconnected: nothing to wait for
		OutcomeQueued, OutcomeQueued, OutcomeDroppedOldest, // the caller would not wait
	}, outcomes(res))
}

// A session's deliveries beyond maxEnqueueBatch go in several calls of one
// pipeline, and the connection may take messages between two of them: a
// later call must hold as well once an earlier one held, or its messages
// would land ahead of the held ones. The byte bound makes room for the
// small messages of the second call right after the first held a large one.
// On Redis Cluster the pipeline is one per shard, and a session's calls all
// go to the shard of its hash tag, in order.
func TestEnqueueHoldingKeepsHoldingAcrossTheCallsOfOnePipeline(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", cluster), func(t *testing.T) { keepsHoldingAcrossCalls(t, cluster) })
	}
}

func keepsHoldingAcrossCalls(t *testing.T, cluster bool) {
	s, _ := newTestStore(t, func(c *Config) {
		c.MaxQueuedMessages = 10000
		c.MaxQueuedBytes = configBytes(100)
		if cluster {
			c.Redis.Addrs = []string{testRedis.ClusterAddr}
			c.Redis.Cluster = true
		}
	})
	rdb := s.rdb
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	var ds []Delivery
	for i := range 3 * maxEnqueueBatch {
		m := []byte("x")
		if i == maxEnqueueBatch-1 {
			m = bytes.Repeat([]byte("L"), 50) // 63 + 50 > 100: held
		}
		ds = append(ds, Delivery{ClientID: cid, Message: m})
	}
	res, err := s.EnqueueHolding(ctx, ds, func(string) bool { return true })
	require.NoError(t, err)
	for i, r := range res {
		want := OutcomeQueued
		if i >= maxEnqueueBatch-1 {
			want = OutcomeHeld
		}
		require.Equal(t, want, r.Outcome, "delivery %d", i)
	}
	got, err := s.Take(ctx, cid, epoch, 1000)
	require.NoError(t, err)
	assert.Len(t, got, maxEnqueueBatch-1)
	fields, err := rdb.HKeys(ctx, sessionKey(cid)).Result()
	require.NoError(t, err)
	for _, f := range fields {
		assert.False(t, strings.HasPrefix(f, "held:"), "the last call removes the mark: %s", f)
	}

	// Without holding, the same deliveries drop the large one (drop-oldest
	// evicts until it fits) and queue the small ones after it.
	res, err = s.Enqueue(ctx, ds)
	require.NoError(t, err)
	for _, r := range res {
		assert.NotEqual(t, OutcomeHeld, r.Outcome)
	}
}

func outcomes(res []EnqueueResult) []Outcome {
	out := make([]Outcome, len(res))
	for i, r := range res {
		out[i] = r.Outcome
	}
	return out
}

func TestALargeEnqueueGoesAsSeveralPipelinesAndKeepsEachClientsOrder(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", cluster), func(t *testing.T) { largeEnqueueKeepsOrder(t, cluster) })
	}
}

func largeEnqueueKeepsOrder(t *testing.T, cluster bool) {
	s, _ := newTestStore(t, func(c *Config) {
		c.MaxQueuedMessages = 10000
		c.MaxQueuedBytes = configBytes(1 << 20)
		if cluster {
			c.Redis.Addrs = []string{testRedis.ClusterAddr}
			c.Redis.Cluster = true
		}
	})
	ctx := testCtx(t)
	const clients, each = 12, 3*maxEnqueueBatch + 5 // four calls per client
	ids := make([]string, clients)
	epochs := make([]uint64, clients)
	for k := range ids {
		ids[k] = clientID(t, fmt.Sprintf("c%d", k))
		epochs[k] = connect(t, s, ids[k], "n1")
	}
	// The clients' deliveries interleaved, 200 B each: 12 × 197 × 200 B
	// is 470 KB, so maxPipelines pipelines of several clients each.
	var ds []Delivery
	for i := range each {
		for k, cid := range ids {
			m := fmt.Appendf(nil, "%d-%04d-", k, i)
			ds = append(ds, Delivery{ClientID: cid, Message: append(m, bytes.Repeat([]byte("x"), 200-len(m))...)})
		}
	}
	calls := 0
	for _, part := range splitCalls(ds, enqueueCalls(ds)) {
		calls += len(part)
	}
	require.Equal(t, clients*4, calls)
	require.Len(t, splitCalls(ds, enqueueCalls(ds)), maxPipelines)

	res, err := s.EnqueueHolding(ctx, ds, func(string) bool { return true })
	require.NoError(t, err)
	for i, r := range res {
		require.Equal(t, OutcomeQueued, r.Outcome, "delivery %d", i)
	}
	for k, cid := range ids {
		got, err := s.Take(ctx, cid, epochs[k], 1000)
		require.NoError(t, err)
		require.Len(t, got, each, "client %d", k)
		for i, m := range got {
			require.True(t, strings.HasPrefix(string(m.Message), fmt.Sprintf("%d-%04d-", k, i)),
				"client %d: message %d is %.8s", k, i, m.Message)
		}
		fields, err := s.rdb.HKeys(ctx, sessionKey(cid)).Result()
		require.NoError(t, err)
		for _, f := range fields {
			assert.False(t, strings.HasPrefix(f, "held:"), "the last call removes the mark: %s", f)
		}
	}
}

func TestSplitCallsKeepsAClientsCallsTogetherInOrder(t *testing.T) {
	msg := bytes.Repeat([]byte("m"), 1000)
	for _, n := range []int{1, 10, 17, 100, 5000} {
		var ds []Delivery
		for i := range n {
			// One client in three has many deliveries, so several calls.
			cid := fmt.Sprintf("c%d", i%7)
			if i%3 == 0 {
				cid = "busy"
			}
			ds = append(ds, Delivery{ClientID: cid, Message: msg})
		}
		calls := enqueueCalls(ds)
		parts := splitCalls(ds, calls)
		total := n * len(msg)
		distinct := make(map[string]bool)
		for _, d := range ds {
			distinct[d.ClientID] = true
		}
		clients := len(distinct)
		wantParts := min(maxPipelines, (total+pipelineBytes-1)/pipelineBytes, clients)
		assert.Len(t, parts, max(1, wantParts), "%d deliveries", n)
		seen := make(map[int]bool)
		partOf := make(map[string]int)
		for p, part := range parts {
			assert.NotEmpty(t, part, "%d deliveries: part %d", n, p)
			for j, c := range part {
				assert.False(t, seen[c], "call %d twice", c)
				seen[c] = true
				if j > 0 {
					assert.Less(t, part[j-1], c, "calls out of order in part %d", p)
				}
				cid := ds[calls[c][0]].ClientID
				if q, ok := partOf[cid]; ok {
					assert.Equal(t, q, p, "%d deliveries: client %s in two pipelines", n, cid)
				}
				partOf[cid] = p
			}
		}
		assert.Len(t, seen, len(calls), "%d deliveries: every call once", n)
	}
}
