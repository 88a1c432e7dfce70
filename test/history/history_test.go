// Package history checks the archive through a whole cluster: real MQTT
// clients of both protocol versions on two frontends, the dispatcher, Redis,
// Kafka and an archiver writing to a real MongoDB-wire server (FerretDB).
// It asks the archive the questions fleets ask of it.
package history

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/archiver"
)

const waitFor = 20 * time.Second

// testRedis and ferret are the redis-server and the MongoDB-wire server
// every cluster of the package uses, each test's archive in a database of
// its own.
var (
	testRedis testkit.TestRedis
	ferret    testkit.TestFerretDB
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	r, stop, err := testkit.StartTestRedis(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server:", err)
		return 1
	}
	defer stop()
	testRedis = r
	return testkit.RunWithFerretDB(m, &ferret)
}

// archive is the test's database.
type archive struct {
	t  *testing.T
	db *mongo.Database
}

func startCluster(t *testing.T) (*clustertest.Cluster, *archive) {
	t.Helper()
	testRedis.Require(t)
	db := ferret.Require(t)
	dbName := fmt.Sprintf("history_%d", time.Now().UnixNano()%1_000_000_000)
	c := clustertest.Start(t, testRedis.Addr, clustertest.Options{
		Frontends:  2,
		ArchiveURI: db.URI,
		Archiver:   func(c *archiver.ServiceConfig) { c.Archive.Database = dbName },
	})
	cl, err := mongo.Connect(options.Client().ApplyURI(db.URI))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return c, &archive{t: t, db: cl.Database(dbName)}
}

// one waits until collection holds exactly one document matching filter
// and returns it.
func (a *archive) one(collection string, filter bson.D) bson.M {
	a.t.Helper()
	var docs []bson.M
	require.Eventually(a.t, func() bool {
		cur, err := a.db.Collection(collection).Find(context.Background(), filter)
		if err != nil {
			return false
		}
		docs = nil
		return cur.All(context.Background(), &docs) == nil && len(docs) == 1
	}, waitFor, 20*time.Millisecond, "one %s document matching %v; last saw %d", collection, filter, len(docs))
	return docs[0]
}

// none waits until no document of collection matches filter.
func (a *archive) none(collection string, filter bson.D) {
	a.t.Helper()
	require.Eventually(a.t, func() bool {
		n, err := a.db.Collection(collection).CountDocuments(context.Background(), filter)
		return err == nil && n == 0
	}, waitFor, 20*time.Millisecond, "no %s document matching %v", collection, filter)
}

// device is an MQTT 3.1.1 client (paho.mqtt.golang).
func device(t *testing.T, addr, id string) (mqtt3.Client, <-chan mqtt3.Message) {
	t.Helper()
	msgs := make(chan mqtt3.Message, 100)
	c := mqtt3.NewClient(mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { msgs <- m }))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(0) })
	return c, msgs
}

func wait(t *testing.T, tok mqtt3.Token) {
	t.Helper()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
}

// console is an MQTT 5 client (paho.golang).
func console(t *testing.T, addr, id string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, PacketTimeout: waitFor})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err = c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	return c
}

func TestTheArchiveAnswersWhatADeviceSentWhatItHoldsAndWhatItReceived(t *testing.T) {
	c, a := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	// A 3.1.1 device on one frontend takes commands and sends telemetry.
	dev, cmds := device(t, c.Frontends[1].Addr, "dev-1")
	wait(t, dev.Subscribe("cmd/dev-1/#", 1, nil))
	// An MQTT 5 operator console on the other frontend watches telemetry
	// and sends a command.
	op := console(t, c.Frontends[0].Addr, "console")
	_, err := op.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tele/+", QoS: 0, NoLocal: true}}})
	require.NoError(t, err)

	// Which subscriptions does a client hold?
	sub := a.one("subscription", bson.D{{Key: "clientId", Value: "dev-1"}})
	assert.Equal(t, "cmd/dev-1/#", sub["topic"])
	assert.Equal(t, true, sub["wildcard"])
	assert.Equal(t, int32(1), sub["qos"])
	assert.IsType(t, bson.DateTime(0), sub["created"])
	sub = a.one("subscription", bson.D{{Key: "clientId", Value: "console"}})
	assert.Equal(t, "tele/+", sub["topic"])
	assert.Equal(t, true, sub["noLocal"])

	telemetry := []byte{0x01, 0xfe, 0x00, 0x42}
	wait(t, dev.Publish("tele/dev-1", 1, false, telemetry))
	_, err = op.Publish(ctx, &paho.Publish{Topic: "cmd/dev-1/reboot", QoS: 1, Payload: []byte(`{"delay":5}`),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "operator", Value: "eve"}}}})
	require.NoError(t, err)
	select {
	case m := <-cmds:
		assert.Equal(t, "cmd/dev-1/reboot", m.Topic())
	case <-time.After(waitFor):
		t.Fatal("the device did not receive the command")
	}

	// What did the device send?
	sent := a.one("message", bson.D{{Key: "clientId", Value: "dev-1"}})
	assert.Equal(t, "tele/dev-1", sent["topic"])
	assert.Equal(t, bson.Binary{Subtype: 0, Data: telemetry}, sent["data"])
	assert.Equal(t, int32(4), sent["protocolVersion"])
	assert.Equal(t, "fe-1", sent["host"])
	assert.Equal(t, int32(1), sent["qos"])

	// Did the device receive the command? The receipt carries the
	// command's messageId.
	cmd := a.one("message", bson.D{{Key: "clientId", Value: "console"}})
	assert.Equal(t, `{"delay":5}`, cmd["data"])
	assert.Equal(t, int32(5), cmd["protocolVersion"])
	assert.Equal(t, "fe-0", cmd["host"])
	assert.Equal(t, bson.D{{Key: "userProperties", Value: bson.A{bson.D{{Key: "key", Value: "operator"}, {Key: "value", Value: "eve"}}}}},
		cmd["properties"])
	got := a.one("publishedMessage", bson.D{{Key: "clientId", Value: "dev-1"}, {Key: "messageId", Value: cmd["messageId"]}})
	assert.Equal(t, "cmd/dev-1/reboot", got["topic"])
	assert.Equal(t, "fe-1", got["host"], "the receipt names the node that delivered it")
	a.none("publishedMessage", bson.D{{Key: "clientId", Value: "console"}})

	// The sessions' history.
	conn := a.one("session_event", bson.D{{Key: "clientId", Value: "dev-1"}, {Key: "event", Value: "connect"}})
	assert.Equal(t, int32(4), conn["protocolVersion"])
	assert.Equal(t, "fe-1", conn["host"])
	s := a.one("session_event", bson.D{{Key: "clientId", Value: "console"}, {Key: "event", Value: "subscribe"}})
	require.Len(t, s["subscriptions"], 1)

	// Unsubscribing removes the subscription; the end of the session is an
	// event with its reason.
	wait(t, dev.Unsubscribe("cmd/dev-1/#"))
	a.none("subscription", bson.D{{Key: "clientId", Value: "dev-1"}})
	a.one("session_event", bson.D{{Key: "clientId", Value: "dev-1"}, {Key: "event", Value: "unsubscribe"}})
	require.NoError(t, op.Disconnect(&paho.Disconnect{ReasonCode: 0}))
	d := a.one("session_event", bson.D{{Key: "clientId", Value: "console"}, {Key: "event", Value: "disconnect"}})
	assert.Equal(t, "client", d["reason"])
	// A clean session's subscriptions end with it.
	a.none("subscription", bson.D{{Key: "clientId", Value: "console"}})
}
