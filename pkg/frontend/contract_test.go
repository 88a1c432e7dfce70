package frontend_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// published is what a test client sent, to compare with the record.
type published struct {
	clientID, username, topic string
	payload                   []byte
	qos                       byte
	retain                    bool
	protocol                  byte
	// MQTT 5 properties (nil/empty when not sent)
	contentType, responseTopic string
	payloadFormat              *byte
	expiry                     *uint32
	correlation                []byte
	user                       []kafkarecord.UserProperty
}

// dialV5 connects a paho.golang (MQTT 5) client.
func dialV5(t *testing.T, addr, clientID, username string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn, PacketTimeout: time.Minute})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if username != "" {
		cp.Username, cp.UsernameFlag = username, true
		cp.Password, cp.PasswordFlag = []byte(passwordOf(username)), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	require.NoError(t, err)
	require.Zero(t, ack.ReasonCode)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// dialV3 connects a paho.mqtt.golang (MQTT 3.1.1) client.
func dialV3(t *testing.T, url, clientID, username string, opts ...func(*pahov3.ClientOptions)) pahov3.Client {
	t.Helper()
	o := pahov3.NewClientOptions().AddBroker(url).SetClientID(clientID).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(30 * time.Second)
	if username != "" {
		o.SetUsername(username).SetPassword(passwordOf(username))
	}
	for _, f := range opts {
		f(o)
	}
	c := pahov3.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second), "connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// passwordOf is the password the test clients use for username.
func passwordOf(username string) string { return "secret-of-" + username }

// passwordFile writes a bcrypt password file of users, each with
// passwordOf its name, and returns its path.
func passwordFile(t *testing.T, users ...string) string {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		hash, err := bcrypt.GenerateFromPassword([]byte(passwordOf(u)), bcrypt.MinCost)
		require.NoError(t, err)
		fmt.Fprintf(&b, "%s:%s\n", u, hash)
	}
	path := filepath.Join(t.TempDir(), "passwords")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

func TestEveryPublishBecomesOneRecordFollowingTheContract(t *testing.T) {
	mosquittoPub := testkit.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	k := testkit.StartKafka(t)
	// mqtt.username carries the authenticated identity: the clients log
	// in, with the authentication defaults.
	users := passwordFile(t, "alice", "bob", "carol")
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.PasswordFile = users
		c.Authz.AllowAll = true // every topic: the test is about who connects
	})
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)

	binary := []byte{0x00, 0xff, 0xfe, 0x80, 'x', 0x00}
	pf := byte(1)
	exp := uint32(3600)
	var sent []published
	start := time.Now()

	// MQTT 5 with paho.golang: every publish property.
	v5 := dialV5(t, n.addr, "paho-v5", "alice")
	for qos := byte(0); qos <= 2; qos++ {
		p := published{clientID: "paho-v5", username: "alice", topic: fmt.Sprintf("fleet/v5/qos%d", qos),
			payload: append([]byte{qos}, binary...), qos: qos, retain: qos == 1, protocol: 5,
			contentType: "application/octet-stream", responseTopic: "reply/paho-v5", expiry: &exp,
			correlation: []byte{0xde, 0xad, 0xbe, 0xef},
			user:        []kafkarecord.UserProperty{{Key: "site", Value: "berlin"}, {Key: "tag", Value: "a"}, {Key: "tag", Value: "b"}}}
		if qos == 2 {
			p.payload, p.payloadFormat, p.contentType = []byte("utf-8 text ✓"), &pf, "text/plain"
		}
		props := &paho.PublishProperties{ContentType: p.contentType, ResponseTopic: p.responseTopic,
			MessageExpiry: p.expiry, CorrelationData: p.correlation, PayloadFormat: p.payloadFormat}
		for _, u := range p.user {
			props.User.Add(u.Key, u.Value)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := v5.Publish(ctx, &paho.Publish{QoS: qos, Retain: p.retain, Topic: p.topic, Payload: p.payload, Properties: props})
		cancel()
		require.NoError(t, err, "qos %d", qos)
		if qos > 0 {
			require.Zero(t, resp.ReasonCode, "qos %d ack reason", qos)
		}
		sent = append(sent, p)
	}

	// MQTT 3.1.1 with paho.mqtt.golang.
	v3 := dialV3(t, "tcp://"+n.addr, "paho-v3", "bob")
	for qos := byte(0); qos <= 2; qos++ {
		p := published{clientID: "paho-v3", username: "bob", topic: fmt.Sprintf("fleet/v3/qos%d", qos),
			payload: append([]byte{qos}, binary...), qos: qos, retain: qos == 2, protocol: 4}
		tok := v3.Publish(p.topic, qos, p.retain, p.payload)
		require.True(t, tok.WaitTimeout(10*time.Second))
		require.NoError(t, tok.Error())
		sent = append(sent, p)
	}

	// mosquitto_pub, an independent implementation, for both versions.
	for _, v := range []struct {
		flag     string
		protocol byte
	}{{"mqttv311", 4}, {"mqttv5", 5}} {
		for qos := byte(0); qos <= 2; qos++ {
			id := fmt.Sprintf("mosq-%s-%d", v.flag, qos)
			p := published{clientID: id, username: "carol", topic: "fleet/mosquitto/" + v.flag, payload: []byte("hello " + id),
				qos: qos, protocol: v.protocol}
			args := []string{"-h", "127.0.0.1", "-p", port(t, n.addr), "-V", v.flag, "-q", strconv.Itoa(int(qos)),
				"-i", id, "-u", "carol", "-P", passwordOf("carol"), "-t", p.topic, "-m", string(p.payload)}
			if v.protocol == 5 {
				args = append(args, "-D", "publish", "user-property", "origin", "mosquitto")
				p.user = []kafkarecord.UserProperty{{Key: "origin", Value: "mosquitto"}}
			}
			out, err := exec.Command(mosquittoPub, args...).CombinedOutput()
			require.NoError(t, err, "mosquitto_pub: %s", out)
			sent = append(sent, p)
		}
	}

	recs := reader.Read(len(sent), 20*time.Second)
	end := time.Now()

	// The operations metrics the README documents are exported with values
	// (a record can be readable a moment before its producer callback ran).
	wants := []string{
		`fleetgate_frontend_connected_clients 2`,
		`fleetgate_ingest_publishes_received_total{qos="0"} 4`,
		`fleetgate_ingest_publishes_received_total{qos="1"} 4`,
		`fleetgate_ingest_publishes_received_total{qos="2"} 4`,
		`fleetgate_ingest_records_produced_total 12`,
		`fleetgate_ingest_produce_latency_seconds_count 12`,
		`fleetgate_ingest_unacked_bytes 0`,
		`fleetgate_ingest_pending_acks 0`,
		`fleetgate_frontend_connections_total{listener="tcp",protocol="5"}`,
		`messaging_kafka_request_duration_seconds_count{node_id="0",request="Produce"}`,
	}
	var missing []string
	require.Eventually(t, func() bool {
		metrics := n.metrics()
		missing = missing[:0]
		for _, w := range wants {
			if !strings.Contains(metrics, w) {
				missing = append(missing, w)
			}
		}
		return len(missing) == 0
	}, 10*time.Second, 20*time.Millisecond, "metrics missing: %v", missing)
	byTopicKey := map[string]*kgo.Record{}
	for _, r := range recs {
		tp, _ := testkit.Header(r, kafkarecord.HeaderTopic)
		q, _ := testkit.Header(r, kafkarecord.HeaderQoS)
		byTopicKey[string(r.Key)+"|"+tp+"|"+q] = r
	}
	ids := map[string]bool{}
	for _, p := range sent {
		r := byTopicKey[fmt.Sprintf("%s|%s|%d", p.clientID, p.topic, p.qos)]
		require.NotNil(t, r, "no record for %s qos %d on %s", p.clientID, p.qos, p.topic)
		t.Run(fmt.Sprintf("%s qos %d", p.clientID, p.qos), func(t *testing.T) {
			assert.Equal(t, p.clientID, string(r.Key), "key")
			assert.Equal(t, p.payload, r.Value, "value")
			assert.False(t, r.Timestamp.Before(start.Add(-time.Millisecond)) || r.Timestamp.After(end), "timestamp %s outside [%s, %s]", r.Timestamp, start, end)
			m, err := kafkarecord.Decode(r)
			require.NoError(t, err)
			assert.Equal(t, kafkarecord.Version, must(testkit.Header(r, kafkarecord.HeaderVersion)))
			assert.Equal(t, "test-node", m.Node)
			assert.Equal(t, kafkarecord.KindPublish, m.Kind)
			_, err = uuid.Parse(m.MessageID)
			assert.NoError(t, err, "message id %q", m.MessageID)
			assert.False(t, ids[m.MessageID], "message id repeated")
			ids[m.MessageID] = true
			assert.Equal(t, p.topic, m.Topic)
			assert.Equal(t, p.qos, m.QoS)
			assert.Equal(t, p.retain, m.Retain)
			assert.Equal(t, p.username, m.Username)
			assert.Equal(t, p.protocol, m.Protocol)
			assert.Equal(t, p.contentType, m.ContentType)
			assert.Equal(t, p.responseTopic, m.ResponseTopic)
			assert.Equal(t, p.payloadFormat, m.PayloadFormat)
			assert.Equal(t, p.expiry, m.MessageExpiry)
			assert.Equal(t, p.correlation, m.CorrelationData)
			assert.Equal(t, p.user, m.UserProperties)
			assert.Empty(t, m.AdditionalHeaders, "headers outside the contract")
		})
	}
}

func must(v string, ok bool) string {
	if !ok {
		return "<missing>"
	}
	return v
}

func port(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	return p
}
