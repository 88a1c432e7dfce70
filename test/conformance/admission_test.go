package conformance

import (
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// Connection admission and keep-alive (issue 15, items 2 and 4;
// docs/listeners.md), through a whole cluster of two frontends: frontend 0
// has the limit under test set low, frontend 1 runs the defaults, so that
// each test also shows the default and that the limit is the node's alone.
// For each limit: the exact answer on MQTT 5 and 3.1.1, the metric that
// counts it (exact increments on the node), and clients beside it that go
// on publishing and receiving through Kafka and the dispatcher.

// nodeCounter is counter on frontend i of c alone.
func nodeCounter(t *testing.T, c *clustertest.Cluster, i int, name, label string) float64 {
	t.Helper()
	return counter(t, &clustertest.Cluster{Frontends: c.Frontends[i : i+1]}, name, label)
}

// protocolName names an MQTT protocol level for a subtest.
func protocolName(version byte) string {
	if version == v5 {
		return "MQTT 5"
	}
	return "MQTT 3.1.1"
}

// requireServed has each client publish a QoS 1 message to topic, which
// all of them subscribed to, and requires every client to receive every
// one: each is still connected, and its messages go through the cluster
// and back.
func requireServed(t *testing.T, topic string, clients ...client) {
	t.Helper()
	want := map[string]bool{}
	for _, c := range clients {
		p := id("served")
		c.Publish(topic, p, 1, false)
		want[p] = true
	}
	for i, c := range clients {
		got := map[string]bool{}
		for range clients {
			got[next(t, c).Payload] = true
		}
		require.Equal(t, want, got, "what client %d received", i)
	}
}

// requireNoServerDisconnect requires that the server sent c (paho.golang)
// no DISCONNECT.
func requireNoServerDisconnect(t *testing.T, c client) {
	t.Helper()
	select {
	case d := <-c.(*paho5).disc:
		t.Fatalf("the server sent DISCONNECT %#x", d.ReasonCode)
	default:
	}
}

// rawConnectAnswer dials addr, sends CONNECT asking keepalive seconds
// (adjust may change it further) and returns the connection, the answer
// and when the CONNECT was sent: the server's keep-alive and idle clocks
// start after that.
func rawConnectAnswer(t *testing.T, addr string, version byte, clientID string, keepalive uint16, adjust func(*packets.Packet)) (*testkit.Raw, packets.Packet, time.Time) {
	t.Helper()
	r := testkit.DialRaw(t, addr, version)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: authed(packets.ConnectParams{ClientIdentifier: clientID, Clean: true, Keepalive: keepalive})}
	if adjust != nil {
		adjust(&pk)
	}
	sent := time.Now()
	r.Send(pk)
	ack := rawRecv(t, r)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	return r, ack, sent
}

// requireEnd requires that the server closes r's connection without
// sending anything (more) and returns when it noticed.
func requireEnd(t *testing.T, r *testkit.Raw) time.Time {
	t.Helper()
	pk, err := r.Recv(waitFor)
	require.Error(t, err, "packet type %d arrived instead of the end of the connection", pk.FixedHeader.Type)
	require.False(t, testkit.IsTimeout(err), "the connection is still open after %s", waitFor)
	return time.Now()
}

// requireServerDisconnect requires that the next packet on r is a
// DISCONNECT with code and that the server then closes the connection
// [MQTT-3.14.4-1] [MQTT-3.14.4-2]; it returns when the DISCONNECT came.
func requireServerDisconnect(t *testing.T, r *testkit.Raw, code byte) time.Time {
	t.Helper()
	pk, err := r.Recv(waitFor)
	require.NoError(t, err, "no DISCONNECT")
	at := time.Now()
	require.Equal(t, packets.Disconnect, pk.FixedHeader.Type, "packet type")
	require.Equal(t, code, pk.ReasonCode, "DISCONNECT reason")
	requireEnd(t, r)
	return at
}

// requireOpen requires that r gets nothing but a PINGRESP for a PINGREQ:
// the connection is open and served.
func requireOpen(t *testing.T, r *testkit.Raw) {
	t.Helper()
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	pk, err := r.Recv(waitFor)
	require.NoError(t, err, "the connection was closed")
	require.Equal(t, packets.Pingresp, pk.FixedHeader.Type, "packet type (reason %#x)", pk.ReasonCode)
}

// dialStorm dials n connections to addr one after the other, MQTT 3.1.1
// and 5 alternately. The dials complete in the kernel's listen backlog
// whether or not the node accepts.
func dialStorm(t *testing.T, addr string, n int) []*testkit.Raw {
	t.Helper()
	conns := make([]*testkit.Raw, n)
	for i := range n {
		conns[i] = testkit.DialRaw(t, addr, v311+byte(i%2))
	}
	return conns
}

// connectStorm sends a CONNECT on each of conns at once and returns when
// every one got CONNACK 0x00, with the CONNACKs' arrival times in order; an
// error names the first connection that got anything else. Safe to call
// from a goroutine other than the test's.
func connectStorm(conns []*testkit.Raw, prefix string) ([]time.Time, error) {
	var (
		mu   sync.Mutex
		acks []time.Time
		wg   sync.WaitGroup
		errs = make(chan error, len(conns))
	)
	for i, r := range conns {
		wg.Go(func() {
			err := r.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
				Connect: authed(packets.ConnectParams{ClientIdentifier: fmt.Sprintf("%s-%d", prefix, i), Clean: true, Keepalive: 60})})
			var ack packets.Packet
			if err == nil {
				ack, err = r.Recv(waitFor)
			}
			if err == nil && (ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0) {
				err = fmt.Errorf("packet type %d, reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
			}
			if err != nil {
				errs <- fmt.Errorf("client %d (protocol %d): %w", i, r.Version, err)
				return
			}
			mu.Lock()
			acks = append(acks, time.Now())
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	return acks, nil
}

// TestAFullNodeRefusesAConnectWithServerBusyAndAnotherNodeTakesIt: with
// mqtt.max-clients 2 on frontend 0 and two clients on it, a CONNECT gets
// CONNACK 0x89 Server busy on MQTT 5 and return code 0x03 Server
// unavailable on MQTT 3.1.1, with Session Present 0 ([MQTT-3.2.2-6] (v5) /
// [MQTT-3.2.2-4] (v3.1.1)), and nothing after it: the server closes the
// connection ([MQTT-3.2.2-7] (v5) / [MQTT-3.2.2-5] (v3.1.1)). The refusal
// comes before any session work: no session in Redis, so the same
// persistent client on frontend 1 (the default 100,000) finds none. Counted
// once each in fleetgate_frontend_connects_refused_total{reason="max_clients"}
// on frontend 0; the two clients on it keep publishing and receiving, and a
// connection that ends makes room.
func TestAFullNodeRefusesAConnectWithServerBusyAndAnotherNodeTakesIt(t *testing.T) {
	c := start(t, clustertest.Options{Frontends: 2, Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.MQTT.Admission.MaxClients = 2
		}
	}})
	full, other := c.Frontends[0].Addr, c.Frontends[1].Addr
	topic := id("admit")
	n5 := dialPaho5(t, full, opts{ID: id("admit-n5"), Subs: []sub{{topic, 1}}})
	n3 := dialPaho3(t, full, opts{ID: id("admit-n3"), Subs: []sub{{topic, 1}}})
	watcher := dialPaho5(t, other, opts{ID: id("admit-watcher"), Subs: []sub{{topic, 1}}})

	for _, tc := range []struct {
		version byte
		code    byte
	}{
		{v5, packets.ErrServerBusy.Code},           // 0x89
		{v311, packets.Err3ServerUnavailable.Code}, // 0x03
	} {
		t.Run(fmt.Sprintf("%s gets 0x%02X", protocolName(tc.version), tc.code), func(t *testing.T) {
			refused := nodeCounter(t, c, 0, "fleetgate_frontend_connects_refused_total", `reason="max_clients"`)
			cid := id("admit-refused")
			persistent := func(pk *packets.Packet) {
				pk.Connect.Clean = false
				if tc.version == v5 {
					pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
				}
			}
			r, ack, _ := rawConnectAnswer(t, full, tc.version, cid, 30, persistent)
			assert.Equal(t, tc.code, ack.ReasonCode, "CONNACK reason")
			assert.False(t, ack.SessionPresent, "Session Present")
			requireEnd(t, r)

			require.Eventually(t, func() bool {
				return nodeCounter(t, c, 0, "fleetgate_frontend_connects_refused_total", `reason="max_clients"`) == refused+1
			}, waitFor, 20*time.Millisecond, "the refusal is counted once")
			assert.Zero(t, nodeCounter(t, c, 1, "fleetgate_frontend_connects_refused_total", `reason="max_clients"`), "frontend 1 refused nobody")
			keys, err := c.Redis.Keys(t.Context(), "fg:{"+cid+"}:*").Result()
			require.NoError(t, err)
			assert.Empty(t, keys, "the refused CONNECT created a session in Redis")

			// Another node takes the device; the refused attempt left no
			// session behind.
			_, ack = rawConnect(t, other, tc.version, cid, persistent)
			assert.False(t, ack.SessionPresent, "a session from the refused CONNECT")

			requireServed(t, topic, n5, n3, watcher)
		})
	}

	t.Run("a connection that ends makes room", func(t *testing.T) {
		n3.Disconnect()
		cid := id("admit-next")
		require.Eventually(t, func() bool {
			conn, err := net.DialTimeout("tcp", full, waitFor)
			if err != nil {
				return false
			}
			r := testkit.WrapRaw(t, conn, v311)
			if r.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
				Connect: authed(packets.ConnectParams{ClientIdentifier: cid, Clean: true, Keepalive: 30})}) != nil {
				return false
			}
			ack, err := r.Recv(waitFor)
			return err == nil && ack.FixedHeader.Type == packets.Connack && ack.ReasonCode == 0
		}, waitFor, 50*time.Millisecond)
		requireServed(t, topic, n5, watcher)
	})
}

// TestAConnectStormWaitsForTheConnectRateAndIsNotRefused: with
// mqtt.connect-rate 5/s and mqtt.connect-burst 5 on frontend 0, 20
// connections opened at once (MQTT 3.1.1 and 5) all get CONNACK 0x00 in
// the end: the node pauses accepting instead of refusing (no CONNACK 0x9F,
// none counted as refused). Counted, not timed: the k-th CONNACK came no
// sooner than burst + 1 + rate × t allows (t since the storm began; the 1 is
// the token the idle listener held for its next accept), and each accept
// held back is one more in fleetgate_frontend_accepts_delayed_total. The
// rate is the node's: during the storm a device connects to frontend 1 at
// once, the clients on frontend 0 keep publishing and receiving, and at
// the defaults (5,000/s per core, a second's burst) frontend 1 lets 200
// connections in at once without holding back one.
func TestAConnectStormWaitsForTheConnectRateAndIsNotRefused(t *testing.T) {
	const (
		perSecond = 5
		burst     = 5
		clients   = 20
	)
	c := start(t, clustertest.Options{Frontends: 2, Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.MQTT.Admission.ConnectRate, cfg.MQTT.Admission.ConnectBurst = perSecond, burst
		}
	}})
	paced, other := c.Frontends[0].Addr, c.Frontends[1].Addr
	topic := id("storm")
	n5 := dialPaho5(t, paced, opts{ID: id("storm-n5"), Subs: []sub{{topic, 1}}})
	n3 := dialPaho3(t, paced, opts{ID: id("storm-n3"), Subs: []sub{{topic, 1}}})
	watcher := dialPaho5(t, other, opts{ID: id("storm-watcher"), Subs: []sub{{topic, 1}}})

	metric := func(i int, name, label string) float64 { return nodeCounter(t, c, i, name, label) }
	const (
		delayed   = "fleetgate_frontend_accepts_delayed_total"
		waited    = "fleetgate_frontend_accept_delay_seconds_total"
		refused   = "fleetgate_frontend_connects_refused_total"
		connected = "fleetgate_frontend_connections_total"
		rateLabel = `reason="connect_rate"`
	)
	before := map[string]float64{
		delayed: metric(0, delayed, rateLabel), waited: metric(0, waited, rateLabel),
		"v4": metric(0, connected, `protocol="4"`), "v5": metric(0, connected, `protocol="5"`),
	}

	began := time.Now()
	conns := dialStorm(t, paced, clients)
	dialed := time.Now()
	type result struct {
		acks []time.Time
		err  error
	}
	done := make(chan result, 1)
	go func() {
		acks, err := connectStorm(conns, id("storm"))
		done <- result{acks, err}
	}()
	// While the storm waits in frontend 0's backlog, frontend 1 accepts
	// at once and frontend 0's clients are served.
	_, ack, _ := rawConnectAnswer(t, other, v5, id("storm-elsewhere"), 30, nil)
	require.Zero(t, ack.ReasonCode)
	elsewhere := time.Now()
	requireServed(t, topic, n5, n3, watcher)
	res := <-done
	require.NoError(t, res.err, "every client of the storm is connected")
	acks := res.acks
	require.Len(t, acks, clients)
	assert.True(t, elsewhere.Before(acks[clients-1]), "frontend 1 answered a CONNECT only after frontend 0's paced storm was in")

	for i, at := range acks {
		bound := burst + 1 + perSecond*at.Sub(began).Seconds()
		require.LessOrEqual(t, float64(i+1), bound, "CONNACK %d came %s after the storm began: faster than the rate", i+1, at.Sub(began))
	}
	// Each accept takes its token first; one that finds the bucket empty
	// waits and is counted. Only the burst, and the tokens that came while
	// the storm was still dialing, can have passed without waiting.
	gotDelayed := metric(0, delayed, rateLabel) - before[delayed]
	gotWaited := metric(0, waited, rateLabel) - before[waited]
	elapsed := time.Since(began)
	unpaced := burst + math.Ceil(perSecond*dialed.Sub(began).Seconds())
	t.Logf("%d CONNACKs within %s of the storm's start (dialed in %s); %v accepts held back (at least %v), %.2f s waited",
		clients, acks[clients-1].Sub(began), dialed.Sub(began), gotDelayed, clients-1-unpaced, gotWaited)
	assert.GreaterOrEqual(t, gotDelayed, clients-1-unpaced, "accepts held back beyond the burst")
	assert.LessOrEqual(t, gotDelayed, float64(clients), "at most one held-back accept per connection")
	assert.Positive(t, gotWaited, "the time waited is counted")
	assert.LessOrEqual(t, gotWaited, elapsed.Seconds()+1.0/perSecond, "the waits follow one another: no longer than the storm lasted")
	assert.Equal(t, float64(clients/2), metric(0, connected, `protocol="4"`)-before["v4"], "MQTT 3.1.1 connects")
	assert.Equal(t, float64(clients/2), metric(0, connected, `protocol="5"`)-before["v5"], "MQTT 5 connects")
	assert.Zero(t, metric(0, refused, `reason="max_clients"`), "nobody refused: the storm waited")
	requireServed(t, topic, n5, n3, watcher)

	t.Run("at the defaults a storm of 200 is let in at once", func(t *testing.T) {
		v4, v5 := metric(1, connected, `protocol="4"`), metric(1, connected, `protocol="5"`)
		acks, err := connectStorm(dialStorm(t, other, 200), id("storm-default"))
		require.NoError(t, err)
		require.Len(t, acks, 200)
		assert.Zero(t, metric(1, delayed, rateLabel), "no accept held back")
		assert.Zero(t, metric(1, waited, rateLabel))
		assert.Zero(t, metric(1, refused, `reason="max_clients"`))
		assert.Equal(t, float64(100), metric(1, connected, `protocol="4"`)-v4)
		assert.Equal(t, float64(100), metric(1, connected, `protocol="5"`)-v5)
		requireServed(t, topic, n5, n3, watcher)
	})
}

// TestKeepAliveIsCappedByTheServerKeepAliveAndEnforced: with
// mqtt.max-keepalive 2s on frontend 0, an MQTT 5 client asking for no
// keep-alive or a longer one gets CONNACK Server Keep Alive 2 and must use
// it [MQTT-3.1.2-21] [MQTT-3.2.2-21]; one asking 2 s or less gets no
// Server Keep Alive and keeps its own [MQTT-3.2.2-22]. A client silent for
// one and a half times its keep-alive gets DISCONNECT 0x8D Keep Alive
// timeout (MQTT 5, [MQTT-3.1.2-22]) or a closed connection (MQTT 3.1.1,
// which has no DISCONNECT from the server, [MQTT-3.1.2-24] (v3.1.1)), never
// sooner, also for an odd keep-alive. Each is counted once in
// fleetgate_frontend_disconnects_total{reason="keepalive_timeout"}. An
// MQTT 3.1.1 client cannot be told a Server Keep Alive, so its 30 s stands.
// paho.golang beside them pings at the 2 s it was given and stays. At the
// default (1200 s, frontend 1) asking 0, 3600 or 65535 gets 1200, asking
// 1200 or less keeps its own, and silent clients stay connected.
func TestKeepAliveIsCappedByTheServerKeepAliveAndEnforced(t *testing.T) {
	c := start(t, clustertest.Options{Frontends: 2, Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.MQTT.Admission.MaxKeepAlive = 2 * time.Second
		}
	}})
	capped, other := c.Frontends[0].Addr, c.Frontends[1].Addr
	topic := id("ka")
	n5 := dialPaho5(t, capped, opts{ID: id("ka-n5"), Subs: []sub{{topic, 1}}}) // asks 30 s
	require.NotNil(t, n5.(*paho5).ack.Properties.ServerKeepAlive, "paho.golang's CONNACK has a Server Keep Alive")
	require.Equal(t, uint16(2), *n5.(*paho5).ack.Properties.ServerKeepAlive)
	n3 := dialPaho3(t, capped, opts{ID: id("ka-n3"), Subs: []sub{{topic, 1}}}) // 30 s, pinging no sooner
	watcher := dialPaho5(t, other, opts{ID: id("ka-watcher"), Subs: []sub{{topic, 1}}})

	const timeouts = `reason="keepalive_timeout"`
	before := [2]float64{
		nodeCounter(t, c, 0, "fleetgate_frontend_disconnects_total", timeouts),
		nodeCounter(t, c, 1, "fleetgate_frontend_disconnects_total", timeouts),
	}
	cases := []struct {
		name      string
		node      int
		version   byte
		keepalive uint16
		announced uint16 // Server Keep Alive; 0: none
		closed    bool   // silent, it is closed after 1.5 × its keep-alive
	}{
		// In the order they are closed, so that each close is seen when it
		// comes and its lower bound means something.
		{"v5 asking 1 s keeps it and is closed after 1.5 s, not 1 s", 0, v5, 1, 0, true},
		{"v3.1.1 asking 1 s is closed after 1.5 s, not 1 s", 0, v311, 1, 0, true},
		{"v5 asking 0 s gets Server Keep Alive 2 and is closed after 3 s", 0, v5, 0, 2, true},
		{"v5 asking 60 s gets Server Keep Alive 2 and is closed after 3 s", 0, v5, 60, 2, true},
		{"v5 asking 2 s keeps it and is closed after 3 s", 0, v5, 2, 0, true},
		{"v3.1.1 asking 60 s keeps it", 0, v311, 60, 0, false},
		{"at the default v5 asking 0 s gets Server Keep Alive 1200", 1, v5, 0, 1200, false},
		{"at the default v5 asking 3600 s gets Server Keep Alive 1200", 1, v5, 3600, 1200, false},
		{"at the default v5 asking 65535 s gets Server Keep Alive 1200", 1, v5, 65535, 1200, false},
		{"at the default v5 asking 1200 s keeps it", 1, v5, 1200, 0, false},
		{"at the default v5 asking 60 s keeps it", 1, v5, 60, 0, false},
		{"at the default v3.1.1 asking 3600 s is accepted", 1, v311, 3600, 0, false},
	}
	conns := make([]*testkit.Raw, len(cases))
	sent := make([]time.Time, len(cases))
	for i, tc := range cases { // all silent at once
		var ack packets.Packet
		conns[i], ack, sent[i] = rawConnectAnswer(t, c.Frontends[tc.node].Addr, tc.version, id("ka-silent"), tc.keepalive, nil)
		require.Zero(t, ack.ReasonCode, "%s: CONNACK reason", tc.name)
		assert.Equal(t, tc.announced != 0, ack.Properties.ServerKeepAliveFlag, "%s: Server Keep Alive present", tc.name)
		assert.Equal(t, tc.announced, ack.Properties.ServerKeepAlive, "%s: Server Keep Alive", tc.name)
	}
	closed := 0
	for i, tc := range cases {
		if !tc.closed {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var at time.Time
			if tc.version == v5 {
				at = requireServerDisconnect(t, conns[i], packets.ErrKeepAliveTimeout.Code)
			} else {
				at = requireEnd(t, conns[i])
			}
			ka := tc.keepalive
			if tc.announced != 0 {
				ka = tc.announced
			}
			limit := time.Duration(ka) * 1500 * time.Millisecond
			assert.GreaterOrEqual(t, at.Sub(sent[i]), limit, "closed before 1.5 × the keep-alive of %d s", ka)
		})
		closed++
	}
	// The others were as silent, for longer than frontend 0's 3 s.
	for i, tc := range cases {
		if !tc.closed {
			t.Run(tc.name, func(t *testing.T) { requireOpen(t, conns[i]) })
		}
	}
	require.Eventually(t, func() bool {
		return nodeCounter(t, c, 0, "fleetgate_frontend_disconnects_total", timeouts)-before[0] == float64(closed)
	}, waitFor, 20*time.Millisecond, "each keep-alive timeout is counted once")
	assert.Equal(t, before[1], nodeCounter(t, c, 1, "fleetgate_frontend_disconnects_total", timeouts), "frontend 1 closed nobody")
	assert.Zero(t, counter(t, c, "fleetgate_frontend_disconnects_total", `reason="idle_timeout"`), "keep-alive, not the idle timeout")

	requireServed(t, topic, n5, n3, watcher)
	requireNoServerDisconnect(t, n5)
}

// TestASilentConnectionIsClosedAtTheIdleTimeoutWhateverItsKeepAlive: with
// mqtt.idle-timeout 3s on frontend 0 (and mqtt.max-keepalive off, so that
// only the idle timeout bounds MQTT 5 too), a connection that asked for
// keep-alive 0 (no deadline in the protocol, [MQTT-3.1.2-22] (v5) /
// [MQTT-3.1.2-24] (v3.1.1)) or a longer one than 3 s / 1.5 and sends nothing
// is closed after 3 s, never sooner: MQTT 5 gets DISCONNECT 0x8D Keep Alive
// timeout first, the closest code the spec has, MQTT 3.1.1 a closed
// connection. Each is counted once in
// fleetgate_frontend_disconnects_total{reason="idle_timeout"}. A
// keep-alive-0 connection that sends a PINGREQ every second is never idle,
// and clients with a 2 s keep-alive beside them stay. At the default (30
// minutes, frontend 1) keep-alive-0 connections of both versions, as silent,
// stay connected.
func TestASilentConnectionIsClosedAtTheIdleTimeoutWhateverItsKeepAlive(t *testing.T) {
	const idle = 3 * time.Second
	c := start(t, clustertest.Options{Frontends: 2, Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.MQTT.Admission.MaxKeepAlive = 0
			cfg.MQTT.Admission.IdleTimeout = idle
		}
	}})
	bounded, other := c.Frontends[0].Addr, c.Frontends[1].Addr
	topic := id("idle")
	// 1.5 × 2 s is within the idle timeout; both libraries ping every 2 s.
	n5, err := dialPaho5Conn(t, bounded, opts{ID: id("idle-n5"), Subs: []sub{{topic, 1}}}, func(cp *paho.Connect) { cp.KeepAlive = 2 })
	require.NoError(t, err)
	n3 := dialPaho3(t, bounded, opts{ID: id("idle-n3"), Subs: []sub{{topic, 1}}, KeepAlive: 2 * time.Second})
	watcher := dialPaho5(t, other, opts{ID: id("idle-watcher"), Subs: []sub{{topic, 1}}})

	const idled = `reason="idle_timeout"`
	before := [2]float64{
		nodeCounter(t, c, 0, "fleetgate_frontend_disconnects_total", idled),
		nodeCounter(t, c, 1, "fleetgate_frontend_disconnects_total", idled),
	}
	cases := []struct {
		name      string
		node      int
		version   byte
		keepalive uint16
		closed    bool
	}{
		{"v3.1.1 with keep-alive 0 is closed", 0, v311, 0, true},
		{"v3.1.1 with keep-alive 600 s is closed", 0, v311, 600, true},
		{"v5 with keep-alive 0 gets DISCONNECT 0x8D", 0, v5, 0, true},
		{"v5 with keep-alive 600 s gets DISCONNECT 0x8D", 0, v5, 600, true},
		{"at the default v3.1.1 with keep-alive 0 stays", 1, v311, 0, false},
		{"at the default v5 with keep-alive 0 stays", 1, v5, 0, false},
	}
	conns := make([]*testkit.Raw, len(cases))
	sent := make([]time.Time, len(cases))
	for i, tc := range cases {
		var ack packets.Packet
		conns[i], ack, sent[i] = rawConnectAnswer(t, c.Frontends[tc.node].Addr, tc.version, id("idle-silent"), tc.keepalive, nil)
		require.Zero(t, ack.ReasonCode, "%s: CONNACK reason", tc.name)
		if tc.node == 0 {
			assert.False(t, ack.Properties.ServerKeepAliveFlag, "%s: no Server Keep Alive without mqtt.max-keepalive", tc.name)
		}
	}
	// A keep-alive-0 connection that talks: a PINGREQ a second, past the
	// idle timeout.
	talker := testkit.DialRaw(t, bounded, v5)
	talker.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: authed(packets.ConnectParams{ClientIdentifier: id("idle-talker"), Clean: true})})
	require.Equal(t, packets.Connack, rawRecv(t, talker).FixedHeader.Type)
	talked := make(chan error, 1)
	go func() {
		for i := range 5 {
			time.Sleep(time.Second) // the client's own pace, not a wait for the server
			err := talker.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
			var pk packets.Packet
			if err == nil {
				pk, err = talker.Recv(waitFor)
			}
			if err == nil && pk.FixedHeader.Type != packets.Pingresp {
				err = fmt.Errorf("packet type %d (reason %#x)", pk.FixedHeader.Type, pk.ReasonCode)
			}
			if err != nil {
				talked <- fmt.Errorf("ping %d: %w", i+1, err)
				return
			}
		}
		talked <- nil
	}()

	closed := 0
	for i, tc := range cases {
		if !tc.closed {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var at time.Time
			if tc.version == v5 {
				at = requireServerDisconnect(t, conns[i], packets.ErrKeepAliveTimeout.Code)
			} else {
				at = requireEnd(t, conns[i])
			}
			assert.GreaterOrEqual(t, at.Sub(sent[i]), idle, "closed before the idle timeout")
		})
		closed++
	}
	require.NoError(t, <-talked, "a connection that sends packets is never idle")
	requireOpen(t, talker)
	for i, tc := range cases {
		if !tc.closed {
			t.Run(tc.name, func(t *testing.T) { requireOpen(t, conns[i]) })
		}
	}
	require.Eventually(t, func() bool {
		return nodeCounter(t, c, 0, "fleetgate_frontend_disconnects_total", idled)-before[0] == float64(closed)
	}, waitFor, 20*time.Millisecond, "each idle connection is counted once")
	assert.Equal(t, before[1], nodeCounter(t, c, 1, "fleetgate_frontend_disconnects_total", idled), "frontend 1 closed nobody")
	assert.Zero(t, counter(t, c, "fleetgate_frontend_disconnects_total", `reason="keepalive_timeout"`), "the idle timeout, not keep-alive")

	requireServed(t, topic, n5, n3, watcher)
	requireNoServerDisconnect(t, n5)
}
