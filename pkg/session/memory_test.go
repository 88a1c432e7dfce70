package session

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// usedMemory reads used_memory from INFO memory.
func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	n, ok := infoNumber(b, rdb, "memory", `(?m)^used_memory:(\d+)`)
	if !ok {
		b.Fatal("no used_memory in INFO memory")
	}
	return n
}

// infoNumber reads the number pattern's group captures from an INFO
// section; false when the section holds no such line.
func infoNumber(b *testing.B, rdb *redis.Client, section, pattern string) (int64, bool) {
	b.Helper()
	info, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(pattern).FindStringSubmatch(info)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n, true
}

// BenchmarkRedisBytesPerSession measures what a device's session costs
// Redis, for docs/capacity.md: b.N MQTT 5 sessions, each connected with a
// will, subscribed to its own command topic, then disconnected with a
// week's expiry (what a fleet of sleeping devices leaves), and the same
// while connected. Run with -benchtime=20000x; it reports used_memory per
// session. Measured on redis-server 7.0 (jemalloc):
//
//	disconnected  768 B/session (session hash with the will, subscriptions
//	              hash, TTLs, expiry index and node index entries)
//	connected     553 B/session (session hash, subscriptions hash, node index)
func BenchmarkRedisBytesPerSession(b *testing.B) {
	testRedis.Require(b)
	for _, connected := range []bool{false, true} {
		name := "disconnected"
		if connected {
			name = "connected"
		}
		b.Run(name, func(b *testing.B) {
			raw := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
			defer raw.Close()
			if err := raw.FlushAll(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
			cfg := testConfig()
			rdb := cfg.Redis.NewClient()
			defer rdb.Close()
			s := New(rdb, cfg)
			ctx := context.Background()
			before := usedMemory(b, raw)
			b.ResetTimer()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			for i := range b.N {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					cid := fmt.Sprintf("sensor-%07d", i)
					res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "fe-1@1764000000000", ExpirySeconds: 7 * 24 * 3600,
						Protocol: 5, Owner: cid, Window: 32, Will: &Will{Topic: "devices/" + cid + "/status", Payload: []byte("offline"), QoS: 1}})
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := s.Subscribe(ctx, cid, res.Epoch, []Subscription{{FilterKey: FilterKey{Filter: "devices/" + cid + "/commands/#"}, QoS: 1}}); err != nil {
						b.Error(err)
						return
					}
					if !connected {
						if err := s.Disconnect(ctx, cid, res.Epoch, 7*24*3600); err != nil {
							b.Error(err)
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(usedMemory(b, raw)-before)/float64(b.N), "B/session")
		})
	}
}

// BenchmarkPendingOf is the poll for lost notices (sessions.Hook.poll) over
// 512 sessions, the poll's batch: what one poll allocates per session is
// the garbage an idle node makes every delivery.poll-interval, which the
// idle connection's memory pays for until the next GC
// (docs/connection-memory.md). It reports allocated bytes per session.
func BenchmarkPendingOf(b *testing.B) {
	testRedis.Require(b)
	cfg := testConfig()
	rdb := cfg.Redis.NewClient()
	defer rdb.Close()
	s := New(rdb, cfg)
	ctx := context.Background()
	ids := make([]string, 512)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-pending-%03d", i)
	}
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		if _, err := s.PendingOf(ctx, ids); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/float64(len(ids)), "B/session")
}
