package frontend_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// FuzzConnectionBytes writes arbitrary bytes on fresh connections to one
// frontend (started once per fuzz process, on the default settings, against
// kfake and the package's redis-server) and reads until the node closes the
// connection or a short deadline passes. The node must keep accepting
// connections, and a well-behaved client connected for the whole run must
// keep getting its PUBACK: whatever one connection sends, it disturbs no
// other.
func FuzzConnectionBytes(f *testing.F) {
	for _, seed := range fuzzConnectionSeeds(f) {
		f.Add(seed)
	}
	k := testkit.StartKafka(f)
	fe := clustertest.StartFrontend(f, fuzzConfig(f, k.Addr()), testkit.DiscardLogger())
	ops := "http://" + fe.Server.OpsAddr() + "/readyz"
	require.Eventually(f, func() bool { return httpStatus(ops) == http.StatusOK }, 15*time.Second, 50*time.Millisecond, "frontend never became ready")

	// A client id no input can guess, so no input takes the session over.
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	neighbour := testkit.DialRaw(f, fe.Addr, 5)
	neighbour.Connect("fuzz-neighbour-"+hex.EncodeToString(id), true)
	var packetID uint16
	var inputs int
	var lastCheck time.Time
	publishOK := func(t *testing.T) {
		t.Helper()
		packetID = packetID%65535 + 1
		require.NoError(t, neighbour.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName: "fuzz/neighbour", PacketID: packetID, Payload: []byte("fine")}), "the neighbour can still write")
		ack, err := neighbour.Recv(10 * time.Second)
		require.NoError(t, err, "the neighbour gets its PUBACK")
		require.Equal(t, packets.Puback, ack.FixedHeader.Type)
		require.Equal(t, packetID, ack.PacketID)
		require.Zero(t, ack.ReasonCode, "reason %q", ack.Properties.ReasonString)
		lastCheck = time.Now()
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.DialTimeout("tcp", fe.Addr, 5*time.Second)
		require.NoError(t, err, "the node accepts connections")
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Millisecond))
		if _, err := c.Write(data); err == nil || !isClosed(err) {
			_, err = io.Copy(io.Discard, c)
			if err != nil && !isClosed(err) && !testkit.IsTimeout(err) {
				t.Fatalf("reading the answer: %v", err)
			}
		}
		// After each of the first inputs (the seeds), then at least every
		// quarter of a second.
		if inputs++; inputs <= 16 || time.Since(lastCheck) >= 250*time.Millisecond {
			publishOK(t)
			require.Equal(t, http.StatusOK, httpStatus(ops), "the node stays ready")
		}
	})
}

// fuzzConfig is the frontend's default configuration with loopback ports
// (testConfig, for a *testing.F).
func fuzzConfig(t testing.TB, brokers string) frontend.Config {
	testRedis.Require(t)
	var cfg frontend.Config
	cfg.RegisterFlags(flag.NewFlagSet("fuzz", flag.PanicOnError))
	cfg.Node.ID = "fuzz-node"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	cfg.MQTT.TLSAddr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Kafka.Brokers = config.StringList{brokers}
	cfg.Kafka.Partitions = 3
	cfg.Shutdown.Timeout = 5 * time.Second
	cfg.Session.Redis.Addrs = config.StringList{testRedis.Addr}
	cfg.Auth.AllowAnonymous = true
	return cfg
}

// fuzzConnectionSeeds are whole conversations of both protocol versions,
// and a few broken ones, for the fuzzer to start from.
func fuzzConnectionSeeds(t testing.TB) [][]byte {
	connect := func(id string) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 30, Clean: true}}
	}
	withWill := connect("fuzz-will")
	withWill.Connect.WillFlag, withWill.Connect.WillTopic, withWill.Connect.WillPayload, withWill.Connect.WillQos = true, "w/t", []byte("bye"), 1
	withWill.Connect.UsernameFlag, withWill.Connect.Username = true, []byte("u")
	conversation := func(version byte, pks ...packets.Packet) []byte {
		var buf bytes.Buffer
		for _, pk := range pks {
			pk.ProtocolVersion = version
			require.NoError(t, mqttwire.Encode(&buf, pk))
		}
		return buf.Bytes()
	}
	publish := func(qos byte, id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: "fuzz/a", PacketID: id, Payload: []byte("p"),
			Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true, User: []packets.UserProperty{{Key: "k", Val: "v"}}}}
	}
	subscribe := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 3,
		Filters: packets.Subscriptions{{Filter: "fuzz/#", Qos: 1}, {Filter: "$share/g/fuzz/+", Qos: 2}}}
	unsubscribe := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 4, Filters: packets.Subscriptions{{Filter: "fuzz/#"}}}
	ping := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}
	pubrel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2}
	disconnect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}
	v5 := conversation(5, connect("fuzz-5"), publish(0, 0), publish(1, 1), publish(2, 2), pubrel, subscribe, ping, unsubscribe, disconnect)
	v4 := conversation(4, connect("fuzz-4"), publish(1, 1), subscribe, ping, disconnect)
	return [][]byte{
		v5,
		v4,
		conversation(5, withWill),
		conversation(4, withWill, publish(2, 7)),
		append(conversation(5, connect("fuzz-tail")), 0x30, 0xff, 0xff, 0xff, 0x7f), // a PUBLISH claiming 256 MB
		append(conversation(4, connect("fuzz-garbage")), 0xf0, 0x00),
		{0x10, 0xff, 0xff, 0xff, 0x7f},
		{},
	}
}

// isClosed reports whether err says the node closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// httpStatus returns the status of a GET of url, 0 when it failed.
func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	return resp.StatusCode
}
