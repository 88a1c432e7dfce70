package session

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunRoundsAppliesEachSessionsRoundOnItsOwn sends the rounds of several
// sessions in one pipeline, on a plain server and on Redis Cluster: each
// session's acknowledgements, PUBREC records and take apply to it alone, and
// a fenced round fails without touching the others.
func TestRunRoundsAppliesEachSessionsRoundOnItsOwn(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name := "plain"
		if cluster {
			name = "cluster"
		}
		t.Run(name, func(t *testing.T) {
			s, raw := newTestStore(t, func(c *Config) {
				if cluster {
					c.Redis.Addrs = []string{testRedis.ClusterAddr}
					c.Redis.Cluster = true
				}
			})
			ctx := testCtx(t)
			a, b, stale := clientID(t, "a"), clientID(t, "}b{"), clientID(t, "stale")
			ea, eb := connect(t, s, a, "n1"), connect(t, s, b, "n1")
			oldEpoch := connect(t, s, stale, "n1")
			connect(t, s, stale, "n2") // taken over: oldEpoch is fenced
			var ds []Delivery
			for _, m := range []string{"a1", "a2", "a3", "a4"} {
				ds = append(ds, Delivery{ClientID: a, Message: []byte(m)})
			}
			ds = append(ds, Delivery{ClientID: b, Message: []byte("b1")}, Delivery{ClientID: stale, Message: []byte("s1")})
			_, err := s.Enqueue(ctx, ds)
			require.NoError(t, err)

			first := []*Round{
				{ClientID: a, Epoch: ea, Take: 3},
				{ClientID: b, Epoch: eb, Take: 10},
				{ClientID: stale, Epoch: oldEpoch, Take: 10},
			}
			s.RunRounds(ctx, first)
			require.NoError(t, first[0].Err)
			require.NoError(t, first[1].Err)
			assert.ErrorIs(t, first[2].Err, ErrFenced, "a stale epoch takes nothing")
			assert.Empty(t, first[2].Taken)
			assert.Equal(t, []string{"a1", "a2", "a3"}, messages(first[0].Taken))
			assert.Equal(t, []uint16{1, 2, 3}, packetIDs(first[0].Taken))
			assert.Equal(t, []string{"b1"}, messages(first[1].Taken))
			assert.False(t, first[0].Full || first[1].Full, "no window stopped a take: a short take emptied the queue")
			if !cluster {
				n, err := raw.LLen(ctx, queueKey(stale)).Result()
				require.NoError(t, err)
				assert.EqualValues(t, 1, n, "the fenced session's queue is untouched")
			}

			// The scripts vanish (a Redis restart or failover): the next
			// pipeline loads them again and runs every round once.
			if !cluster {
				require.NoError(t, raw.ScriptFlush(ctx).Err())
			}
			second := []*Round{
				// PUBACK of 1, PUBREC of 2; then room for the rest.
				{ClientID: a, Epoch: ea, Acks: []uint16{1, 999}, Pubrecs: []uint16{2}, Take: 5},
				{ClientID: b, Epoch: eb, Acks: []uint16{1}},
			}
			s.RunRounds(ctx, second)
			require.NoError(t, second[0].Err)
			require.NoError(t, second[1].Err)
			assert.Equal(t, []string{"a4"}, messages(second[0].Taken), "acks apply before the take, in one script")
			assert.Empty(t, second[1].Taken, "a round without a take takes nothing")

			inflight, err := s.Inflight(ctx, a)
			require.NoError(t, err)
			assert.Equal(t, []uint16{2, 3, 4}, inflightIDs(inflight))
			assert.True(t, inflight[0].Released, "PUBREC recorded: PUBREL is resent after a reconnect")
			assert.False(t, inflight[1].Released)
			inflight, err = s.Inflight(ctx, b)
			require.NoError(t, err)
			assert.Empty(t, inflight)
			info, err := s.Session(ctx, a)
			require.NoError(t, err)
			assert.Zero(t, info.QueuedBytes, "taking keeps the byte count of the queue")
		})
	}
}

// TestDirectDeliveryKeepsOrderAndWindow: with WithDirectDelivery, a message
// for a connected session with an empty queue and room in its window goes
// straight into its inflight hash with the next packet id and sequence
// number; once the window is full messages queue, and the queue keeps them
// behind, in order, even after the window frees up.
func TestDirectDeliveryKeepsOrderAndWindow(t *testing.T) {
	s, raw := newTestStore(t, nil, WithDirectDelivery())
	ctx := testCtx(t)
	cid, off := clientID(t, "c"), clientID(t, "off")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 3600, Protocol: 5, Window: 2})
	require.NoError(t, err)
	epoch := res.Epoch
	ro, err := s.Connect(ctx, ConnectRequest{ClientID: off, Node: "n1", ExpirySeconds: 3600, Protocol: 5, Window: 2})
	require.NoError(t, err)
	require.NoError(t, s.Disconnect(ctx, off, ro.Epoch, 3600))

	enqueue := func(cid, msg string) EnqueueResult {
		t.Helper()
		r, err := s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte(msg)}})
		require.NoError(t, err)
		return r[0]
	}
	m1, m2, m3 := enqueue(cid, "m1"), enqueue(cid, "m2"), enqueue(cid, "m3")
	assert.Equal(t, OutcomeDirect, m1.Outcome)
	assert.Equal(t, "direct", m1.Outcome.String())
	assert.Equal(t, "n1", m1.Node)
	assert.Equal(t, epoch, m1.Epoch)
	assert.Equal(t, []uint16{1, 2}, []uint16{m1.PacketID, m2.PacketID})
	assert.Equal(t, []uint64{1, 2}, []uint64{m1.Seq, m2.Seq})
	assert.Equal(t, OutcomeQueued, m3.Outcome, "the window of 2 is full")
	assert.Equal(t, OutcomeQueued, enqueue(off, "x").Outcome, "a disconnected session's messages queue")

	// m1 acknowledged: the window has room, but m3 waits in the queue, so
	// m4 queues behind it instead of overtaking it.
	require.NoError(t, s.Ack(ctx, cid, epoch, m1.PacketID))
	assert.Equal(t, OutcomeQueued, enqueue(cid, "m4").Outcome)
	r := Round{ClientID: cid, Epoch: epoch, Take: 10}
	s.RunRounds(ctx, []*Round{&r})
	require.NoError(t, r.Err)
	assert.Equal(t, []string{"m3"}, messages(r.Taken), "a take never fills the inflight hash beyond the window")
	assert.Equal(t, uint64(3), r.Taken[0].Seq)
	assert.Equal(t, uint64(3), r.Seq, "the round reports the sequence counter")
	assert.True(t, r.Full, "the window stopped the take with m4 left in the queue")
	again := Round{ClientID: cid, Epoch: epoch, Take: 10}
	s.RunRounds(ctx, []*Round{&again})
	require.NoError(t, again.Err)
	assert.Empty(t, again.Taken)
	assert.True(t, again.Full, "a full window takes nothing, and says the queue is not empty")

	inflight, err := s.Inflight(ctx, cid)
	require.NoError(t, err)
	require.Len(t, inflight, 2)
	assert.Equal(t, []uint64{2, 3}, []uint64{inflight[0].Seq, inflight[1].Seq})
	assert.Equal(t, "m2", string(inflight[0].Message))

	// Without WithDirectDelivery (a frontend queuing retained messages),
	// or with a window of 0, everything queues.
	plain, _ := newTestStore(t, nil)
	require.NoError(t, s.Ack(ctx, cid, epoch, inflight[0].PacketID))
	pr, err := plain.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("p")}})
	require.NoError(t, err)
	assert.Equal(t, OutcomeQueued, pr[0].Outcome)
	n, err := raw.LLen(ctx, queueKey(cid)).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "m4 and p wait in the queue")

	// A reconnect learns the sequence counter: what is in flight is at or
	// below it, what is handed over later above it. A clean start resets it.
	reconnect, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 3600, Protocol: 5, Window: 2})
	require.NoError(t, err)
	assert.Equal(t, uint64(3), reconnect.Seq)
	clean, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5, Window: 2})
	require.NoError(t, err)
	assert.Zero(t, clean.Seq)
}

// The deliveries of one session in one Enqueue run as one script per
// maxEnqueueBatch of them: the first ones fill the window directly, the rest
// queue behind them in order, a message whose subscription is gone is
// skipped, and the deliveries of other sessions in between are untouched.
func TestDirectDeliveryOfManyMessagesInOneCall(t *testing.T) {
	s, _ := newTestStore(t, nil, WithDirectDelivery())
	ctx := testCtx(t)
	cid, other, nobody := clientID(t, "c"), clientID(t, "other"), clientID(t, "nobody")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 3600, Protocol: 5, Window: 3})
	require.NoError(t, err)
	epoch := res.Epoch
	_, err = s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}})
	require.NoError(t, err)
	eo := connect(t, s, other, "n2")

	const n = 3*maxEnqueueBatch + 5
	var ds []Delivery
	for i := range n {
		d := Delivery{ClientID: cid, Message: fmt.Appendf(nil, "m%d", i), Subscriptions: []FilterKey{{Filter: "a/#"}}}
		if i == 1 || i == 100 {
			d.Subscriptions = []FilterKey{{Filter: "gone"}}
		}
		ds = append(ds, d, Delivery{ClientID: other, Message: fmt.Appendf(nil, "o%d", i)})
		if i == 7 {
			ds = append(ds, Delivery{ClientID: nobody, Message: []byte("x")})
		}
	}
	got, err := s.Enqueue(ctx, ds)
	require.NoError(t, err)
	require.Len(t, got, len(ds))

	var direct []uint64
	var queued []string
	for i, d := range ds {
		r := got[i]
		switch d.ClientID {
		case nobody:
			assert.Equal(t, OutcomeNoSession, r.Outcome)
		case other:
			assert.Equal(t, OutcomeQueued, r.Outcome, "other sessions have no window: they queue")
			assert.Equal(t, "n2", r.Node)
		case cid:
			switch string(d.Message) {
			case "m1", "m100":
				assert.Equal(t, OutcomeNotSubscribed, r.Outcome, "%s", d.Message)
				continue
			}
			assert.Equal(t, "n1", r.Node)
			switch r.Outcome {
			case OutcomeDirect:
				assert.Equal(t, epoch, r.Epoch)
				assert.Equal(t, uint16(r.Seq), r.PacketID)
				assert.Empty(t, queued, "%s went direct after a message was queued", d.Message)
				direct = append(direct, r.Seq)
			case OutcomeQueued:
				queued = append(queued, string(d.Message))
			default:
				t.Errorf("%s: outcome %s", d.Message, r.Outcome)
			}
		}
	}
	assert.Equal(t, []uint64{1, 2, 3}, direct, "the window of 3 filled in order")
	want := []string{}
	for i := 4; i < n; i++ {
		if i != 100 {
			want = append(want, fmt.Sprintf("m%d", i))
		}
	}
	assert.Equal(t, want, queued)

	inflight, err := s.Inflight(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []string{"m0", "m2", "m3"}, inflightMessages(inflight))
	info, err := s.Session(ctx, cid)
	require.NoError(t, err)
	var qb int64
	for _, m := range want {
		qb += int64(len(m))
	}
	assert.Equal(t, qb, info.QueuedBytes, "the byte count covers every queued message")

	// Everything queued comes out in order, after the three in flight.
	require.NoError(t, s.AckMany(ctx, cid, epoch, []uint16{1, 2, 3}))
	var taken []string
	for len(taken) < len(want) {
		r := Round{ClientID: cid, Epoch: epoch, Take: 3}
		s.RunRounds(ctx, []*Round{&r})
		require.NoError(t, r.Err)
		require.NotEmpty(t, r.Taken)
		taken = append(taken, messages(r.Taken)...)
		var ids []uint16
		for _, m := range r.Taken {
			ids = append(ids, m.PacketID)
		}
		require.NoError(t, s.AckMany(ctx, cid, epoch, ids))
	}
	assert.Equal(t, want, taken)
	others, err := s.Take(ctx, other, eo, 1000)
	require.NoError(t, err)
	assert.Len(t, others, n)
	assert.Equal(t, "o0", string(others[0].Message))
	assert.Equal(t, fmt.Sprintf("o%d", n-1), string(others[n-1].Message))
}

func inflightMessages(ms []InflightMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Message)
	}
	return out
}

func TestDirectDeliveryInOneCallSkipsIDsInFlightAcrossTheWrap(t *testing.T) {
	s, raw := newTestStore(t, nil, WithDirectDelivery())
	ctx := testCtx(t)
	cid := clientID(t, "c")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 3600, Protocol: 5, Window: 10})
	require.NoError(t, err)
	epoch := res.Epoch
	_, err = s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}})
	require.NoError(t, err)
	// Three messages in flight at ids the counter is about to pass, and the
	// counter near the end of the id space.
	require.NoError(t, raw.HSet(ctx, inflightKey(cid), "65533", "1|P|0|x", "1", "2|P|0|y", "2", "3|P|0|z").Err())
	require.NoError(t, raw.HSet(ctx, sessionKey(cid), "pid", 65530, "seq", 3).Err())

	var ds []Delivery
	for i := range 8 {
		ds = append(ds, Delivery{ClientID: cid, Message: fmt.Appendf(nil, "m%d", i), Subscriptions: []FilterKey{{Filter: "a/#"}}})
	}
	got, err := s.Enqueue(ctx, ds)
	require.NoError(t, err)
	var ids []uint16
	var seqs []uint64
	for i, r := range got {
		if i < 7 {
			require.Equal(t, OutcomeDirect, r.Outcome, "message %d", i)
			ids, seqs = append(ids, r.PacketID), append(seqs, r.Seq)
		} else {
			assert.Equal(t, OutcomeQueued, r.Outcome, "the window of 10 is full with 3 in flight and 7 handed over")
		}
	}
	assert.Equal(t, []uint16{65531, 65532, 65534, 65535, 3, 4, 5}, ids, "ids skip 0 and those in flight [MQTT-2.2.1-3, MQTT-2.2.1-4]")
	assert.Equal(t, []uint64{4, 5, 6, 7, 8, 9, 10}, seqs)

	inflight, err := s.Inflight(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []string{"x", "y", "z", "m0", "m1", "m2", "m3", "m4", "m5", "m6"}, inflightMessages(inflight))
	assert.Equal(t, []uint16{65533, 1, 2, 65531, 65532, 65534, 65535, 3, 4, 5}, inflightIDs(inflight))

	h, err := raw.HMGet(ctx, sessionKey(cid), "pid", "seq").Result()
	require.NoError(t, err)
	assert.Equal(t, []any{"5", "10"}, h, "the counters are stored as integers")
}

func TestARoundTakesAndAcknowledgesThousandsOfMessages(t *testing.T) {
	s, _ := newTestStore(t, func(c *Config) { c.MaxQueuedMessages = 5000 })
	ctx := testCtx(t)
	cid := clientID(t, "c")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 3600, Protocol: 5, Window: 3000})
	require.NoError(t, err)
	epoch := res.Epoch
	const n = 2500
	var ds []Delivery
	for i := range n {
		ds = append(ds, Delivery{ClientID: cid, Message: fmt.Appendf(nil, "m%d", i)})
	}
	_, err = s.Enqueue(ctx, ds)
	require.NoError(t, err)

	got, err := s.Take(ctx, cid, epoch, n)
	require.NoError(t, err)
	require.Len(t, got, n)
	acks := make([]uint16, n)
	for i, m := range got {
		require.Equal(t, uint16(i+1), m.PacketID)
		require.Equal(t, uint64(i+1), m.Seq)
		require.Equal(t, fmt.Sprintf("m%d", i), string(m.Message))
		acks[i] = m.PacketID
	}
	inflight, err := s.Inflight(ctx, cid)
	require.NoError(t, err)
	require.Len(t, inflight, n)

	require.NoError(t, s.AckMany(ctx, cid, epoch, acks))
	inflight, err = s.Inflight(ctx, cid)
	require.NoError(t, err)
	assert.Empty(t, inflight, "every acknowledgement of the round applied")
}
