package subscriptions

import (
	"context"
	"flag"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

const testTopic = "mqtt.subscriptions"

// env is one kfake cluster with the change-log topic created as fleetgate
// creates it.
type env struct {
	t      *testing.T
	kafka  *testkit.Kafka
	kcfg   kafka.Config
	writer *Writer
	log    *slog.Logger
}

func newEnv(t *testing.T, partitions int) *env {
	t.Helper()
	k := testkit.StartKafka(t)
	var kcfg kafka.Config
	kcfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	kcfg.Brokers = config.StringList{k.Addr()}
	log := testkit.DiscardLogger()
	adm, err := kafka.NewAdmin(kcfg, log)
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	require.NoError(t, kafka.EnsureCompactedTopic(ctx(t), adm, testTopic, partitions, -1))
	prod, err := kafka.NewChangelogProducer(kcfg, 5*time.Second, log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &env{t: t, kafka: k, kcfg: kcfg, writer: NewWriter(prod, testTopic), log: log}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// follow starts a Follower on a fresh index, stopped at the end of the test,
// and returns it with its index.
func (e *env) follow() (*Follower, *topic.Index) {
	e.t.Helper()
	f, ix := e.follower(e.log)
	e.run(f)
	return f, ix
}

func (e *env) follower(log *slog.Logger) (*Follower, *topic.Index) {
	e.t.Helper()
	cl, err := kafka.NewChangelogConsumer(e.kcfg, testTopic, e.log, kafka.Telemetry{})
	require.NoError(e.t, err)
	e.t.Cleanup(cl.Close)
	ix := new(topic.Index)
	return NewFollower(cl, testTopic, ix, log), ix
}

// run runs f until the end of the test and requires that it then returned nil.
func (e *env) run(f *Follower) {
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(c) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(e.t, err, "Run after cancel")
		case <-time.After(5 * time.Second):
			e.t.Error("Run did not return after cancel")
		}
	})
}

func (e *env) subscribe(clientID string, subs ...topic.Subscription) {
	e.t.Helper()
	require.NoError(e.t, e.writer.Subscribe(ctx(e.t), clientID, subs))
}

func (e *env) unsubscribe(clientID string, keys ...Key) {
	e.t.Helper()
	require.NoError(e.t, e.writer.Unsubscribe(ctx(e.t), clientID, keys))
}

// produceRaw writes records as they are, bypassing the Writer.
func (e *env) produceRaw(recs ...*kgo.Record) {
	e.t.Helper()
	cl, err := kafka.NewChangelogProducer(e.kcfg, 5*time.Second, e.log, kafka.Telemetry{})
	require.NoError(e.t, err)
	defer cl.Close()
	for _, r := range recs {
		r.Topic = testTopic
	}
	require.NoError(e.t, cl.ProduceSync(ctx(e.t), recs...).FirstErr())
}

func waitReady(t *testing.T, f *Follower) {
	t.Helper()
	select {
	case <-f.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("follower not ready after 10s")
	}
}

// snapshot is every subscription in ix of the given clients, sorted.
func snapshot(ix *topic.Index, clients ...string) []topic.Subscription {
	var all []topic.Subscription
	for _, c := range clients {
		all = append(all, ix.Subscriptions(c)...)
	}
	slices.SortFunc(all, func(a, b topic.Subscription) int {
		return strings.Compare(a.ClientID+"\x00"+a.Group+"\x00"+a.Filter, b.ClientID+"\x00"+b.Group+"\x00"+b.Filter)
	})
	return all
}

// match is the exported part of a topic.Result, in a comparable order.
type match struct {
	Clients []topic.ClientMatch
	Groups  []topic.GroupMatch
}

// matched is what topicName matches in ix.
func matched(ix *topic.Index, topicName string) match {
	r := ix.Match(topicName, "")
	slices.SortFunc(r.Clients, func(a, b topic.ClientMatch) int { return strings.Compare(a.ClientID, b.ClientID) })
	for i := range r.Clients {
		slices.Sort(r.Clients[i].Identifiers)
	}
	slices.SortFunc(r.Groups, func(a, b topic.GroupMatch) int {
		return strings.Compare(a.Group+"\x00"+a.Filter, b.Group+"\x00"+b.Filter)
	})
	for i := range r.Groups {
		slices.SortFunc(r.Groups[i].Members, func(a, b topic.Subscription) int { return strings.Compare(a.ClientID, b.ClientID) })
	}
	return match{Clients: r.Clients, Groups: r.Groups}
}
