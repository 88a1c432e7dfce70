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
// subscribed; per iteration a dispatcher's batch hands one message to each
// (enqueueScript: straight into the inflight hash) and each session's node
// acknowledges it in a delivery round (roundScript). It reports the time
// Redis spent in the scripts per delivery (INFO commandstats), the figure
// the fleet-shape runs report as Redis's CPU per delivery.
func BenchmarkDeliveryScripts(b *testing.B) {
	testRedis.Require(b)
	raw := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer raw.Close()
	ctx := context.Background()
	if err := raw.FlushAll(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	rdb := cfg.Redis.NewClient()
	defer rdb.Close()
	s := New(rdb, cfg, WithDirectDelivery()) // as the dispatchers run it
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
	ds := make([]Delivery, sessions)
	for i := range ds {
		ds[i] = Delivery{ClientID: ids[i], Message: msg, Subscriptions: []FilterKey{{Filter: "bench/" + ids[i]}}}
	}
	rounds := make([]*Round, sessions)
	before := scriptMicros(b, raw)
	b.ResetTimer()
	for range b.N {
		res, err := s.Enqueue(ctx, ds)
		if err != nil {
			b.Fatal(err)
		}
		for i, r := range res {
			if r.Outcome != OutcomeDirect {
				b.Fatalf("delivery %d: outcome %v, want direct", i, r.Outcome)
			}
			rounds[i] = &Round{ClientID: ids[i], Epoch: epochs[i], Acks: []uint16{r.PacketID}} // the queue is empty: the pump takes nothing
		}
		s.RunRounds(ctx, rounds)
		for _, r := range rounds {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(scriptMicros(b, raw)-before)/float64(b.N*sessions), "redis-µs/delivery")
}
