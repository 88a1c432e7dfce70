package subscriptions

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// history writes a mixed history of subscribes, re-subscribes and
// unsubscribes to e, applies the same to want, and returns the clients.
func history(t *testing.T, e *env, want *topic.Index) []string {
	t.Helper()
	var clients []string
	sub := func(c string, subs ...topic.Subscription) {
		e.subscribe(c, subs...)
		for _, s := range subs {
			s.ClientID = c
			_, err := want.Add(s)
			require.NoError(t, err)
		}
	}
	unsub := func(c string, keys ...Key) {
		e.unsubscribe(c, keys...)
		for _, k := range keys {
			want.Remove(c, k.Group, k.Filter)
		}
	}
	for i := range 20 {
		c := fmt.Sprintf("device-%02d", i)
		clients = append(clients, c)
		sub(c,
			topic.Subscription{Filter: fmt.Sprintf("devices/%s/cmd/#", c), QoS: 1, Identifier: uint32(i + 1)},
			topic.Subscription{Filter: "broadcast/+", QoS: byte(i % 3), NoLocal: i%2 == 0},
			topic.Subscription{Group: fmt.Sprintf("g%d", i%3), Filter: "jobs/#", QoS: 2, RetainHandling: 1},
		)
	}
	for i := 0; i < 20; i += 4 {
		// Re-subscribing replaces the options.
		sub(clients[i], topic.Subscription{Filter: "broadcast/+", QoS: 2, RetainAsPublished: true, Identifier: 77})
	}
	for i := 1; i < 20; i += 5 {
		unsub(clients[i], Key{Filter: "broadcast/+"}, Key{Group: fmt.Sprintf("g%d", i%3), Filter: "jobs/#"})
	}
	// A session that ended: every one of its subscriptions tombstoned.
	unsub(clients[2], KeyOf(topic.Subscription{Filter: "devices/device-02/cmd/#"}), Key{Filter: "broadcast/+"}, Key{Group: "g2", Filter: "jobs/#"})
	return clients
}

func requireSameIndex(t *testing.T, want, got *topic.Index, clients []string) {
	t.Helper()
	require.Equal(t, want.Len(), got.Len(), "subscriptions")
	require.Equal(t, snapshot(want, clients...), snapshot(got, clients...))
	for _, name := range []string{"broadcast/x", "jobs/a/b", "devices/device-00/cmd/reboot", "devices/device-02/cmd/reboot", "nothing/here"} {
		require.Equal(t, matched(want, name), matched(got, name), "match %q", name)
	}
}

func TestFollowerStartedAfterTheWritesRebuildsTheExactIndexBeforeReady(t *testing.T) {
	e := newEnv(t, 12)
	want := new(topic.Index)
	clients := history(t, e, want)
	require.NotZero(t, want.Len())

	f, got := e.follow()
	waitReady(t, f)
	// No Eventually: Ready promises the whole history is applied.
	requireSameIndex(t, want, got, clients)
	assert.Empty(t, got.Subscriptions("device-02"), "an ended session leaves nothing")
	assert.Equal(t, []topic.Subscription{{ClientID: "device-00", Filter: "broadcast/+", QoS: 2, RetainAsPublished: true, Identifier: 77}},
		filterSubs(got.Subscriptions("device-00"), "broadcast/+"), "a re-subscribe replaced the options")
}

func filterSubs(subs []topic.Subscription, filter string) []topic.Subscription {
	var out []topic.Subscription
	for _, s := range subs {
		if s.Filter == filter {
			out = append(out, s)
		}
	}
	return out
}

func TestFollowerOfAnEmptyTopicIsReadyAtOnce(t *testing.T) {
	e := newEnv(t, 12)
	f, ix := e.follow()
	waitReady(t, f)
	assert.Zero(t, ix.Len())
}

func TestFollowerStartedFirstSeesLaterChanges(t *testing.T) {
	e := newEnv(t, 12)
	f, got := e.follow()
	waitReady(t, f)

	e.subscribe("c1", topic.Subscription{Filter: "a/+", QoS: 1})
	require.Eventually(t, func() bool { return len(got.Match("a/b", "").Clients) == 1 }, 10*time.Second, 10*time.Millisecond)

	e.subscribe("c1", topic.Subscription{Filter: "a/+", QoS: 2, Identifier: 5})
	require.Eventually(t, func() bool {
		r := got.Match("a/b", "")
		return len(r.Clients) == 1 && r.Clients[0].QoS == 2
	}, 10*time.Second, 10*time.Millisecond, "a re-subscribe replaces the options")
	assert.Equal(t, []uint32{5}, got.Match("a/b", "").Clients[0].Identifiers)

	e.unsubscribe("c1", Key{Filter: "a/+"})
	require.Eventually(t, func() bool { r := got.Match("a/b", ""); return r.Empty() }, 10*time.Second, 10*time.Millisecond, "the tombstone removes it")
	assert.Zero(t, got.Len())

	want := new(topic.Index)
	clients := history(t, e, want)
	require.Eventually(t, func() bool { return got.Len() == want.Len() }, 10*time.Second, 10*time.Millisecond)
	// Ordering per client makes the end state exact, not just the count.
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual(snapshot(want, clients...), snapshot(got, clients...)) }, 10*time.Second, 10*time.Millisecond)
	requireSameIndex(t, want, got, clients)
}

func TestTwoFollowersAgree(t *testing.T) {
	e := newEnv(t, 5)
	want := new(topic.Index)
	early, a := e.follow()
	clients := history(t, e, want)
	late, b := e.follow()
	waitReady(t, early)
	waitReady(t, late)
	require.Eventually(t, func() bool { return a.Len() == want.Len() }, 10*time.Second, 10*time.Millisecond)
	requireSameIndex(t, want, b, clients)
	requireSameIndex(t, b, a, clients)
}

func TestFollowerSkipsUndecodableRecords(t *testing.T) {
	e := newEnv(t, 1)
	e.subscribe("c", topic.Subscription{Filter: "before", QoS: 1})
	e.produceRaw(
		versioned([]byte("no-separators"), []byte{1, 0, 0}),
		&kgo.Record{Key: []byte("c\x00\x00unversioned"), Value: []byte{1, 0, 0}},
		versioned([]byte("c\x00\x00future"), []byte{1, 0xf0, 0}),
		versioned([]byte("c\x00\x00bad/#/filter"), []byte{1, 0, 0}),
	)
	e.subscribe("c", topic.Subscription{Filter: "after", QoS: 2})

	var logs testkit.SyncBuffer
	f, ix := e.follower(slog.New(slog.NewTextHandler(&logs, nil)))
	e.run(f)
	waitReady(t, f)

	assert.Equal(t, []topic.Subscription{{ClientID: "c", Filter: "after", QoS: 2}, {ClientID: "c", Filter: "before", QoS: 1}}, snapshot(ix, "c"))
	out := logs.String()
	for _, offset := range []string{"offset=1", "offset=2", "offset=3", "offset=4"} {
		assert.Contains(t, out, offset)
	}
	assert.Contains(t, out, "partition=0")
	assert.Contains(t, out, "topic="+testTopic)
}

func TestFollowerRunFailsWhenTheTopicDoesNotExist(t *testing.T) {
	e := newEnv(t, 1)
	f, _ := e.follower(e.log)
	f.topic = "missing"
	err := f.Run(ctx(t))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing")
	select {
	case <-f.Ready():
		t.Fatal("ready without an index")
	default:
	}
}

func TestFollowerRunReturnsNilWhenCancelledBeforeItStarts(t *testing.T) {
	e := newEnv(t, 1)
	f, _ := e.follower(e.log)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, f.Run(c))
}

// CatchUp gives read-your-writes: once a subscribe returned (the change is
// in Kafka), CatchUp returns only when the index has it — with no waiting
// or polling in the test.
func TestCatchUpReturnsOnceEveryWrittenChangeIsInTheIndex(t *testing.T) {
	e := newEnv(t, 12)
	f, got := e.follow()
	waitReady(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		c := fmt.Sprintf("c%d", i)
		e.subscribe(c, topic.Subscription{Filter: "catch/" + c, QoS: 1})
		require.NoError(t, f.CatchUp(ctx))
		require.Len(t, got.Match("catch/"+c, "").Clients, 1, "subscription %d is in the index when CatchUp returns", i)
		e.unsubscribe(c, Key{Filter: "catch/" + c})
		require.NoError(t, f.CatchUp(ctx))
		r := got.Match("catch/"+c, "")
		require.True(t, r.Empty(), "unsubscribe %d is applied when CatchUp returns", i)
	}
}

// listOffsetsCounted counts the ListOffsets requests e's cluster answers.
func listOffsetsCounted(e *env) *atomic.Int32 {
	var n atomic.Int32
	e.kafka.Cluster.ControlKey(kmsg.ListOffsets.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.Cluster.KeepControl()
		n.Add(1)
		return nil, nil, false // answered as usual
	})
	return &n
}

// By default every CatchUp lists the change log (one request while the
// index is current); with ReuseWithin, the calls within the window after a
// confirmation list nothing.
func TestCatchUpListsOncePerReuseWindowAndOncePerCallByDefault(t *testing.T) {
	e := newEnv(t, 12)
	listed := listOffsetsCounted(e)
	e.subscribe("c", topic.Subscription{Filter: "a/b", QoS: 1})
	calls := func(f *Follower) int32 {
		t.Helper()
		waitReady(t, f)
		require.NoError(t, f.CatchUp(ctx(t))) // the first may list the start offsets too
		before := listed.Load()
		for range 50 {
			require.NoError(t, f.CatchUp(ctx(t)))
		}
		return listed.Load() - before
	}
	def, _ := e.follow()
	assert.Equal(t, int32(50), calls(def), "default: one ListOffsets per CatchUp")
	listedN, reusedN := def.Checks()
	assert.Equal(t, [2]uint64{51, 0}, [2]uint64{listedN, reusedN}, "counted: every call listed")
	assert.Zero(t, def.Window())

	cl, err := kafka.NewChangelogConsumer(e.kcfg, testTopic, e.log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	reuse := NewFollower(cl, testTopic, new(topic.Index), e.log, ReuseWithin(time.Hour))
	e.run(reuse)
	assert.Zero(t, calls(reuse), "within the window the confirmation answers")
	listedN, reusedN = reuse.Checks()
	assert.Equal(t, [2]uint64{1, 50}, [2]uint64{listedN, reusedN}, "counted: the first listed, the rest reused")
	assert.Equal(t, time.Hour, reuse.Window())
}

// The promise ReuseWithin keeps: a change acknowledged by Kafka at least
// the window before CatchUp is called is in the index when CatchUp returns,
// even though a confirmation was made just before the change. The
// follower's fetching is paused, so the index cannot get the change by
// chance: CatchUp must list, see the change and wait for it.
func TestCatchUpWithReuseWaitsForAChangeAcknowledgedAWindowBefore(t *testing.T) {
	const window = DefaultSettle // as the dispatchers run
	e := newEnv(t, 12)
	cl, err := kafka.NewChangelogConsumer(e.kcfg, testTopic, e.log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ix := new(topic.Index)
	f := NewFollower(cl, testTopic, ix, e.log, ReuseWithin(window))
	e.run(f)
	waitReady(t, f)
	prod, err := kafka.NewChangelogProducer(e.kcfg, 5*time.Second, e.log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	w := NewWriter(prod, testTopic, AnnounceSettle(window)) // as a frontend writes
	for i := range 5 {
		c := fmt.Sprintf("c%d", i)
		require.NoError(t, f.CatchUp(ctx(t)), "a confirmation just before the change")
		cl.PauseFetchTopics(testTopic)
		require.NoError(t, w.Subscribe(ctx(t), c, []topic.Subscription{{Filter: "w/" + c, QoS: 1}}))
		time.Sleep(window) // what a frontend waits before the SUBACK
		done := make(chan error, 1)
		go func() { done <- f.CatchUp(ctx(t)) }()
		select {
		case err := <-done:
			t.Fatalf("change %d: CatchUp returned (%v) while the index cannot have the change", i, err)
		case <-time.After(300 * time.Millisecond):
		}
		r := ix.Match("w/"+c, "")
		require.True(t, r.Empty(), "change %d: fetching is paused", i)
		cl.ResumeFetchTopics(testTopic)
		require.NoError(t, <-done)
		require.Len(t, ix.Match("w/"+c, "").Clients, 1, "change %d is in the index when CatchUp returns", i)
		require.Equal(t, window, time.Duration(f.settle.Load()), "the writer announced the window: it still holds")
	}
}

// A subscription written since the follower started by a writer that
// answers sooner than the follower's window — one that announces less, or
// nothing (a build that does not wait) — makes the follower check as often
// as that writer needs; one announcing more changes nothing, and history
// from before the follower started is not heeded.
func TestCatchUpChecksAsOftenAsTheWritersAnnounce(t *testing.T) {
	e := newEnv(t, 3)
	prod, err := kafka.NewChangelogProducer(e.kcfg, 5*time.Second, e.log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	silent := NewWriter(prod, testTopic)
	require.NoError(t, silent.Subscribe(ctx(t), "old", []topic.Subscription{{Filter: "history"}}))
	listed := listOffsetsCounted(e)

	cl, err := kafka.NewChangelogConsumer(e.kcfg, testTopic, e.log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ix := new(topic.Index)
	f := NewFollower(cl, testTopic, ix, e.log, ReuseWithin(time.Hour))
	e.run(f)
	waitReady(t, f)
	has := func(name string) bool { r := ix.Match(name, ""); return !r.Empty() }
	lists := func() int32 {
		t.Helper()
		require.NoError(t, f.CatchUp(ctx(t)))
		before := listed.Load()
		for range 10 {
			require.NoError(t, f.CatchUp(ctx(t)))
		}
		return listed.Load() - before
	}
	require.Zero(t, lists(), "history written without the header is not heeded")

	longer := NewWriter(prod, testTopic, AnnounceSettle(2*time.Hour))
	require.NoError(t, longer.Subscribe(ctx(t), "patient", []topic.Subscription{{Filter: "p"}}))
	require.Eventually(t, func() bool { return has("p") }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, lists(), "a writer that waits longer changes nothing")

	shorter := NewWriter(prod, testTopic, AnnounceSettle(time.Millisecond))
	require.NoError(t, shorter.Subscribe(ctx(t), "hasty", []topic.Subscription{{Filter: "h"}}))
	require.Eventually(t, func() bool { return has("h") }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, f.CatchUp(ctx(t)))
	time.Sleep(5 * time.Millisecond) // past the announced millisecond
	before := listed.Load()
	require.NoError(t, f.CatchUp(ctx(t)))
	require.Equal(t, before+1, listed.Load(), "a writer that waits 1 ms: a confirmation lasts 1 ms")

	require.NoError(t, silent.Subscribe(ctx(t), "older", []topic.Subscription{{Filter: "o"}}))
	require.Eventually(t, func() bool { return has("o") }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, int32(10), lists(), "a writer that does not wait: a listing per call")
}

// A follower loading a change log logs how far it got until it is ready:
// the changes applied, the subscriptions, and the changes left to read up
// to the end offsets it listed. (A test's change log fits in one poll, so
// the log line is asked for directly.)
func TestFollowerLogsItsProgressWhileLoading(t *testing.T) {
	var out bytes.Buffer
	f := NewFollower(nil, testTopic, new(topic.Index), slog.New(slog.NewTextHandler(&out, nil)))
	f.pos[0], f.pos[1] = 40, 7
	start := time.Now().Add(-time.Minute)
	load := loadProgress{start: start, last: start, applied: 47}
	f.logLoad(&load, map[int32]int64{0: 100, 1: 10})
	assert.Contains(t, out.String(), "loading subscription index")
	assert.Contains(t, out.String(), "changes_applied=47")
	assert.Contains(t, out.String(), "changes_left=63")
	out.Reset()
	f.logLoad(&load, map[int32]int64{0: 100, 1: 10})
	assert.Empty(t, out.String(), "at most one line per interval")
	f.logLoad(&loadProgress{start: start, last: start}, map[int32]int64{})
	assert.Empty(t, out.String(), "nothing once nothing is pending")
}
