package session

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// scriptMicros is the time Redis spent in EVALSHA so far (INFO
// commandstats), in µs.
func scriptMicros(b *testing.B, rdb *redis.Client) int64 {
	n, _ := infoNumber(b, rdb, "commandstats", `(?m)^cmdstat_evalsha:calls=\d+,usec=(\d+),`)
	return n
}

// BenchmarkDeliveryScripts is the Redis side of the closed-loop pairs
// benchmark's deliveries: 100 connected sessions (window 16), each
// subscribed; per iteration a dispatcher's batch hands n messages to each
// (enqueueScript: straight into the inflight hash, one call per session)
// and each session's node acknowledges them in a delivery round
// (roundScript). n is 1 (a message a second per device: each script
// carries one) and 10 (the closed loop: about ten per script). It reports
// the time Redis spent in the scripts per delivery (INFO commandstats), the
// figure the fleet-shape runs report as Redis's CPU per delivery.
func BenchmarkDeliveryScripts(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("%d per script", n), func(b *testing.B) { benchmarkDeliveryScripts(b, n) })
	}
}

// benchStore is a Store on an emptied test Redis, and a plain client of
// that Redis to read its statistics.
func benchStore(b *testing.B, opts ...Option) (*Store, *redis.Client) {
	testRedis.Require(b)
	raw := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	b.Cleanup(func() { _ = raw.Close() })
	if err := raw.FlushAll(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	rdb := cfg.Redis.NewClient()
	b.Cleanup(func() { _ = rdb.Close() })
	return New(rdb, cfg, opts...), raw
}

func benchmarkDeliveryScripts(b *testing.B, perScript int) {
	s, raw := benchStore(b, WithDirectDelivery()) // as the dispatchers run it
	ctx := context.Background()
	const sessions = 100
	epochs := make([]uint64, sessions)
	ids := make([]string, sessions)
	for i := range sessions {
		ids[i] = fmt.Sprintf("bench-pair-%03d", i)
		res, err := s.Connect(ctx, ConnectRequest{ClientID: ids[i], Node: "fe-1@1764000000000", CleanStart: true, Protocol: 4, Window: 16})
		if err != nil {
			b.Fatal(err)
		}
		epochs[i] = res.Epoch
		if _, err := s.Subscribe(ctx, ids[i], res.Epoch, []Subscription{{FilterKey: FilterKey{Filter: "bench/" + ids[i]}, QoS: 1}}); err != nil {
			b.Fatal(err)
		}
	}
	msg := make([]byte, 180) // a 64-byte payload's delivery message, about
	ds := make([]Delivery, 0, sessions*perScript)
	for i := range sessions {
		for range perScript {
			ds = append(ds, Delivery{ClientID: ids[i], Message: msg, Subscriptions: []FilterKey{{Filter: "bench/" + ids[i]}}})
		}
	}
	rounds := make([]*Round, sessions)
	before := scriptMicros(b, raw)
	b.ResetTimer()
	for range b.N {
		res, err := s.Enqueue(ctx, ds)
		if err != nil {
			b.Fatal(err)
		}
		for i := range rounds {
			rounds[i] = &Round{ClientID: ids[i], Epoch: epochs[i]} // the queue is empty: the pump takes nothing
		}
		for j, r := range res {
			if r.Outcome != OutcomeDirect {
				b.Fatalf("delivery %d: outcome %v, want direct", j, r.Outcome)
			}
			rd := rounds[j/perScript]
			rd.Acks = append(rd.Acks, r.PacketID)
		}
		s.RunRounds(ctx, rounds)
		for _, r := range rounds {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(scriptMicros(b, raw)-before)/float64(b.N*len(ds)), "redis-µs/delivery")
}

// BenchmarkConnectScripts is the Redis side of a reconnect storm of
// persistent sessions: per iteration 100 sessions each connect (resuming
// the session: connectScript) and end with an expiry (disconnectScript).
// It reports the time Redis spent in the scripts per connect and end.
func BenchmarkConnectScripts(b *testing.B) {
	s, raw := benchStore(b)
	ctx := context.Background()
	const sessions = 100
	ids := make([]string, sessions)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-device-%03d", i)
		res, err := s.Connect(ctx, ConnectRequest{ClientID: ids[i], Node: "fe-1@1764000000000", Protocol: 4, ExpirySeconds: 3600})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Disconnect(ctx, ids[i], res.Epoch, 3600); err != nil {
			b.Fatal(err)
		}
	}
	before := scriptMicros(b, raw)
	b.ResetTimer()
	for range b.N {
		for _, id := range ids {
			res, err := s.Connect(ctx, ConnectRequest{ClientID: id, Node: "fe-1@1764000000000", Protocol: 4, ExpirySeconds: 3600})
			if err != nil {
				b.Fatal(err)
			}
			if !res.SessionPresent {
				b.Fatal("the session was not resumed")
			}
			if err := s.Disconnect(ctx, id, res.Epoch, 3600); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(scriptMicros(b, raw)-before)/float64(b.N*sessions), "redis-µs/connect")
}
