package retained

import (
	"strconv"
	"testing"
)

// BenchmarkADevicesOwnWildcardOver100kRetainedTopics: 50,000 devices with a
// retained status and a retained configuration each; one device subscribes
// to its own topics (devices/d-7/#), as every device does at CONNECT with a
// clean session. Run against the build before the buckets (one hash) to
// compare: go test ./pkg/retained -run x -bench . -benchtime 50x
func BenchmarkADevicesOwnWildcardOver100kRetainedTopics(b *testing.B) {
	s, _ := newTestStore(b)
	ctx := b.Context()
	fillDevices(b, s, 50000, "status", "config")
	b.ResetTimer()
	for range b.N {
		got, err := s.Match(ctx, "devices/d-7/#")
		if err != nil || len(got) != 2 {
			b.Fatalf("got %d, %v", len(got), err)
		}
	}
}

// BenchmarkAWideWildcardOver100kRetainedTopics: a backend's filter with a
// wildcard in its first two levels (devices/+/status) over the same store:
// every bucket is read, 50,000 matches.
func BenchmarkAWideWildcardOver100kRetainedTopics(b *testing.B) {
	s, _ := newTestStore(b)
	ctx := b.Context()
	fillDevices(b, s, 50000, "status", "config")
	b.ResetTimer()
	for range b.N {
		n := 0
		err := s.Each(ctx, "devices/+/status", func(page []Message) bool { n += len(page); return true })
		if err != nil || n != 50000 {
			b.Fatalf("got %d, %v", n, err)
		}
	}
}

// fillDevices retains a message on devices/d-<i>/<leaf> for each of n
// devices and each leaf (a path of one or more levels).
func fillDevices(tb testing.TB, s *Store, n int, leaves ...string) {
	tb.Helper()
	ups := make([]Update, 0, n*len(leaves))
	for i := range n {
		d := "devices/d-" + strconv.Itoa(i)
		for _, l := range leaves {
			ups = append(ups, Update{Message: msg(d+"/"+l, ""), Version: Version{TimeMs: 1}})
		}
	}
	if _, err := s.ApplyAll(tb.Context(), ups); err != nil {
		tb.Fatal(err)
	}
}
