package frontend_test

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// plainCounter reads an unlabelled counter from the /metrics text, 0 when absent.
func plainCounter(text, name string) float64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestThePollFindsWhatNoNoticeAnnouncedAndLeavesIdleSessionsAlone: the
// poll (delivery.poll-interval, here short; notices carry delivery at the
// default, as every pub/sub test shows) looks at each local session that can
// get messages (it subscribed) with two Redis reads and starts only the
// pumps that have work no notice announced: a message queued, or one handed
// straight to the session's inflight window. Idle sessions cost no delivery
// round, and sessions that never subscribed (devices that only publish) are
// not even read. (TestThePollLooksAtAResumedSessionWithSubscriptions covers
// a session resumed with its subscriptions.)
func TestThePollFindsWhatNoNoticeAnnouncedAndLeavesIdleSessionsAlone(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.Delivery.PollInterval = 100 * time.Millisecond })
	// Persistent sessions outlive the test in the package's Redis: ids of
	// their own, so the test can run again (-count).
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	busyID := "poll-busy-" + run
	idle := testkit.DialRaw(t, n.addr, 5)
	idle.Connect("poll-idle-"+run, false)
	busy := testkit.DialRaw(t, n.addr, 5)
	busy.Connect(busyID, false)

	// Neither subscribed: five intervals pass without a read.
	time.Sleep(500 * time.Millisecond)
	require.Zero(t, plainCounter(n.metrics(), "fleetgate_delivery_poll_sessions_total"), "sessions without subscriptions are not polled")

	busy.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "poll/#", Qos: 1}}})
	pk, err := busy.Recv(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Suback, pk.FixedHeader.Type)
	require.Eventually(t, func() bool {
		return plainCounter(n.metrics(), "fleetgate_delivery_poll_sessions_total") >= 5
	}, 10*time.Second, 50*time.Millisecond, "the poll looks at the subscribed session every interval")
	require.Zero(t, plainCounter(n.metrics(), "fleetgate_delivery_poll_kicks_total"), "idle sessions are not kicked")

	rdb := n.cfg.Session.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := func(payload string) []byte {
		return handoff.EncodeMessage(&handoff.Message{Topic: "poll/t", Payload: []byte(payload), QoS: 1})
	}
	receive := func(want string) {
		t.Helper()
		pk, err := busy.Recv(10 * time.Second) // 100 poll intervals
		require.NoError(t, err)
		require.Equal(t, packets.Publish, pk.FixedHeader.Type)
		require.Equal(t, want, string(pk.Payload))
		busy.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}

	// Queued, as a dispatcher does for a session with a backlog; its
	// notice is never sent.
	res, err := session.New(rdb, n.cfg.Session).Enqueue(ctx, []session.Delivery{{ClientID: busyID, Message: msg("queued")}})
	require.NoError(t, err)
	require.Equal(t, session.OutcomeQueued, res[0].Outcome)
	receive("queued")

	// Handed straight to the connected session's window, as a dispatcher
	// does when its queue is empty; its notice (which carries the message)
	// is never sent.
	direct := session.New(rdb, n.cfg.Session, session.WithDirectDelivery())
	require.Eventually(t, func() bool { // the PUBACK of "queued" recorded
		inflight, err := direct.Inflight(ctx, busyID)
		require.NoError(t, err)
		return len(inflight) == 0
	}, 10*time.Second, 20*time.Millisecond)
	res, err = direct.Enqueue(ctx, []session.Delivery{{ClientID: busyID, Message: msg("direct")}})
	require.NoError(t, err)
	require.Equal(t, session.OutcomeDirect, res[0].Outcome)
	receive("direct")

	// The poll counts its kicks once it kicked every session of a batch:
	// the message it let through may arrive first.
	require.Eventually(t, func() bool {
		return plainCounter(n.metrics(), "fleetgate_delivery_poll_kicks_total") >= 2
	}, 10*time.Second, 20*time.Millisecond, "both messages came through the poll's kicks")
	_, err = idle.Recv(300 * time.Millisecond)
	require.True(t, testkit.IsTimeout(err), "the idle session gets nothing: %v", err)
}

// TestThePollLooksAtAResumedSessionWithSubscriptions: a session resumed
// with the subscriptions of an earlier connection is polled from its
// CONNECT on, without a SUBSCRIBE on this connection, so a message queued
// for it while no notice reaches the node is delivered.
func TestThePollLooksAtAResumedSessionWithSubscriptions(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.Delivery.PollInterval = 100 * time.Millisecond })
	id := "poll-resumed-" + strconv.FormatInt(time.Now().UnixNano(), 36) // a run of its own (-count)
	first := testkit.DialRaw(t, n.addr, 4)
	first.Connect(id, false)
	first.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "poll-resumed/#", Qos: 1}}})
	pk, err := first.Recv(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Suback, pk.FixedHeader.Type)
	first.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	_, err = first.Recv(10 * time.Second)
	require.Error(t, err, "the node closes the connection after DISCONNECT")

	again := testkit.DialRaw(t, n.addr, 4)
	connack := again.Connect(id, false)
	require.True(t, connack.SessionPresent)
	rdb := n.cfg.Session.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Queued as a dispatcher queues it (with the subscription it matched);
	// its notice is never sent.
	res, err := session.New(rdb, n.cfg.Session).Enqueue(ctx, []session.Delivery{{ClientID: id,
		Message:       handoff.EncodeMessage(&handoff.Message{Topic: "poll-resumed/t", Payload: []byte("queued"), QoS: 1}),
		Subscriptions: []session.FilterKey{{Filter: "poll-resumed/#"}}}})
	require.NoError(t, err)
	require.Equal(t, session.OutcomeQueued, res[0].Outcome)
	pk, err = again.Recv(10 * time.Second) // 100 poll intervals
	require.NoError(t, err)
	require.Equal(t, packets.Publish, pk.FixedHeader.Type)
	require.Equal(t, "queued", string(pk.Payload))
	require.Eventually(t, func() bool { // counted after the kick (see above)
		return plainCounter(n.metrics(), "fleetgate_delivery_poll_kicks_total") > 0
	}, 10*time.Second, 20*time.Millisecond, "the message came through the poll's kick")
}

// TestWithTheDefaultPollIntervalAMessageNoNoticeAnnouncedArrives is the
// poll's rescue at its default delivery.poll-interval (30 s; the tests
// above shorten it to see several intervals): a message queued for a
// connected subscriber whose notice never comes reaches it within about
// one interval.
func TestWithTheDefaultPollIntervalAMessageNoNoticeAnnouncedArrives(t *testing.T) {
	t.Parallel()
	pollRescueAtTheDefault(t, false)
}

// TestWithTheDefaultPollIntervalAResumedSessionsMessageNoNoticeAnnouncedArrives
// is the test above for a session resumed on a new connection that sends
// no SUBSCRIBE (its subscription is from an earlier one): the poll covers
// the connection whatever it did since its CONNECT.
func TestWithTheDefaultPollIntervalAResumedSessionsMessageNoNoticeAnnouncedArrives(t *testing.T) {
	t.Parallel()
	pollRescueAtTheDefault(t, true)
}

// pollRescueAtTheDefault queues a message without its notice for a
// subscriber of a node with the default poll interval, on the connection
// that subscribed or, with resume, on a later one that resumed the
// session, and waits for the poll to deliver it.
func pollRescueAtTheDefault(t *testing.T, resume bool) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	interval := n.cfg.Delivery.PollInterval
	require.Equal(t, 30*time.Second, interval, "the product's default")
	id := "poll-default-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sub := testkit.DialRaw(t, n.addr, 5)
	sub.Connect(id, false) // persistent: the session outlives the connection
	sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "poll-default/#", Qos: 1}}})
	pk, err := sub.Recv(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Suback, pk.FixedHeader.Type)
	if resume {
		sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		_, _ = sub.Recv(2 * time.Second) // the server closes the connection
		sub = testkit.DialRaw(t, n.addr, 5)
		require.True(t, sub.Connect(id, false).SessionPresent, "the session is resumed")
	}

	rdb := n.cfg.Session.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Queued as a dispatcher queues it; its notice is never sent.
	res, err := session.New(rdb, n.cfg.Session).Enqueue(ctx, []session.Delivery{{ClientID: id,
		Message: handoff.EncodeMessage(&handoff.Message{Topic: "poll-default/t", Payload: []byte("rescued"), QoS: 1})}})
	require.NoError(t, err)
	require.Equal(t, session.OutcomeQueued, res[0].Outcome)
	queued := time.Now()
	pk, err = sub.Recv(interval + 15*time.Second)
	require.NoError(t, err, "nothing within a poll interval and a margin")
	require.Equal(t, packets.Publish, pk.FixedHeader.Type)
	require.Equal(t, "rescued", string(pk.Payload))
	t.Logf("delivered by the poll %s after it was queued (resumed session: %t)", time.Since(queued).Round(time.Millisecond), resume)
}
