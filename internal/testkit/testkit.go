//go:build unix

package testkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// Kafka is an in-process Kafka-protocol cluster whose produce path can be
// made to fail.
type Kafka struct {
	Cluster *kfake.Cluster
	failing atomic.Bool
	// Produces counts produce requests the cluster accepted.
	Produces atomic.Int64

	holdMu  sync.Mutex
	holding chan struct{} // closed to release held produce requests; nil: none held
}

// StartKafka starts a one-broker kfake cluster on a free loopback port,
// closed at the end of the test.
func StartKafka(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	k := &Kafka{Cluster: c}
	t.Cleanup(func() { k.HoldProduce(false) })
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		k.holdMu.Lock()
		held := k.holding
		k.holdMu.Unlock()
		if held != nil {
			// A broker that took the request and does not answer (a
			// stopped process): it waits, then is handled as usual.
			c.SleepControl(func() { <-held })
		}
		if !k.failing.Load() {
			k.Produces.Add(1)
			return nil, nil, false
		}
		// Answer every partition with a retriable error, as a cluster
		// that cannot reach min.insync.replicas would.
		preq := req.(*kmsg.ProduceRequest)
		resp := preq.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return k
}

// Addr is the broker address.
func (k *Kafka) Addr() string { return k.Cluster.ListenAddrs()[0] }

// FailProduce makes every produce request fail (true) or succeed (false).
func (k *Kafka) FailProduce(fail bool) { k.failing.Store(fail) }

// HoldProduce makes the cluster take produce requests and not answer them
// (true), as a broker stopped mid-request, until it is called with false,
// which answers those held.
func (k *Kafka) HoldProduce(hold bool) {
	k.holdMu.Lock()
	defer k.holdMu.Unlock()
	switch {
	case hold && k.holding == nil:
		k.holding = make(chan struct{})
	case !hold && k.holding != nil:
		close(k.holding)
		k.holding = nil
	}
}

// Reader consumes a topic from the start.
type Reader struct {
	t  testing.TB
	cl *kgo.Client
}

// Partitions is how many partitions topic has in the Kafka at brokers; the
// test fails when the topic is not there.
func Partitions(t testing.TB, brokers, topic string, opts ...kgo.Opt) int {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers)}, opts...)...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode), "topic %s", topic)
	require.NotEmpty(t, resp.Topics[0].Partitions, "topic %s has no partitions", topic)
	return len(resp.Topics[0].Partitions)
}

// NewReader returns a consumer of topic on brokers, from the earliest offset.
func NewReader(t testing.TB, brokers string, topic string) *Reader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &Reader{t: t, cl: cl}
}

// Read returns exactly n records, failing the test if fewer arrive within
// timeout, or if more than n are there after a short grace period.
func (r *Reader) Read(n int, timeout time.Duration) []*kgo.Record {
	r.t.Helper()
	recs := r.ReadAtLeast(n, timeout)
	// Anything beyond n would be a duplicate; give it a moment to show up.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	fs := r.cl.PollFetches(ctx)
	fs.EachRecord(func(rec *kgo.Record) { recs = append(recs, rec) })
	require.Len(r.t, recs, n, "records in kafka")
	return recs
}

// ReadAtLeast returns at least n records (all that arrived), waiting up to
// timeout.
func (r *Reader) ReadAtLeast(n int, timeout time.Duration) []*kgo.Record {
	r.t.Helper()
	var recs []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(recs) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		fs := r.cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				r.t.Logf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(rec *kgo.Record) { recs = append(recs, rec) })
	}
	require.GreaterOrEqual(r.t, len(recs), n, "records in kafka after %s", timeout)
	return recs
}

// Header returns the first value of header key in r, and whether it exists.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// FreeAddr returns a loopback address with a port that was free a moment ago
// and that this process has not handed out before: the kernel may give a
// port it just gave (and that a test has not bound yet) to the next caller.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreeLoopbackAddr()
	require.NoError(t, err)
	return addr
}

// Raw is a byte-level MQTT connection for tests that must control exactly
// what goes on the wire.
type Raw struct {
	t       testing.TB
	Conn    net.Conn
	Version byte
	br      *bufio.Reader
}

// TCPPair returns both ends of a loopback TCP connection, the accepted one
// first, closed at the end of the test.
func TCPPair(t testing.TB) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(); _ = c.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// DialRaw opens a TCP connection to addr.
func DialRaw(t testing.TB, addr string, version byte) *Raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	return WrapRaw(t, c, version)
}

// WrapRaw makes a Raw of an open connection, closed at the end of the test.
func WrapRaw(t testing.TB, c net.Conn, version byte) *Raw {
	t.Cleanup(func() { _ = c.Close() })
	return &Raw{t: t, Conn: c, Version: version, br: bufio.NewReader(c)}
}

// Send encodes and writes pk, failing the test on a write error.
func (r *Raw) Send(pk packets.Packet) {
	r.t.Helper()
	require.NoError(r.t, r.TrySend(pk))
}

// TrySend encodes and writes pk, returning a write error; safe to call from
// a goroutine other than the test's.
func (r *Raw) TrySend(pk packets.Packet) error {
	pk.ProtocolVersion = r.Version
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.Connect.ProtocolName = []byte("MQTT")
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1 // [MQTT-3.6.1-1]
	}
	var buf bytes.Buffer
	err := mqttwire.Encode(&buf, pk)
	if err != nil {
		return err
	}
	_ = r.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = r.Conn.Write(buf.Bytes())
	return err
}

// Write writes raw bytes.
func (r *Raw) Write(b []byte) {
	r.t.Helper()
	_ = r.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := r.Conn.Write(b)
	require.NoError(r.t, err)
}

// Connect sends CONNECT with the client id and clean flag (persistent
// sessions get a 300 s expiry on MQTT 5) and requires a
// successful CONNACK.
func (r *Raw) Connect(clientID string, clean bool) packets.Packet {
	r.t.Helper()
	return r.ConnectAs(clientID, clean, "", nil)
}

// ConnectAs is Connect with a username and a password, each sent when not
// empty.
func (r *Raw) ConnectAs(clientID string, clean bool, username string, password []byte) packets.Packet {
	r.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: clientID, Clean: clean, Keepalive: 30,
			Username: []byte(username), UsernameFlag: username != "", Password: password, PasswordFlag: len(password) > 0}}
	if !clean && r.Version == 5 {
		// MQTT 5 keeps a session after the connection only with an expiry.
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 300, true
	}
	r.Send(pk)
	ack, err := r.Recv(5 * time.Second)
	require.NoError(r.t, err)
	require.Equal(r.t, packets.Connack, ack.FixedHeader.Type)
	require.Zero(r.t, ack.ReasonCode, "connack reason")
	return ack
}

// Recv reads one packet, or returns the read error (io.EOF on close, a
// timeout error when nothing arrived within d).
func (r *Raw) Recv(d time.Duration) (packets.Packet, error) {
	_ = r.Conn.SetReadDeadline(time.Now().Add(d))
	pk, _, err := mqttwire.Read(r.br, r.Version, nil)
	return pk, err
}

// IsTimeout reports whether err is a read timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RequireTool returns the path of a command-line tool. CI installs every
// tool the tests use, so there a missing one fails the test; elsewhere the
// test is skipped with the package to install.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed; .ci/run must install %s", name, pkg)
		}
		t.Skipf("%s not installed: apt-get install %s", name, pkg)
	}
	return p
}

// DiscardLogger is the logger of tests that read no logs.
func DiscardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
