package events

import (
	"encoding/json"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzDecode feeds Decode arbitrary record values and version headers: it
// returns ErrInvalid or an event that Encode writes to a record decoding to
// the same event, allocating in proportion to the record. An event Encode
// writes without encoding/json is byte for byte what encoding/json writes.
func FuzzDecode(f *testing.F) {
	yes, expiry, code, qos := true, uint32(300), byte(0x8e), byte(1)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	for _, e := range []*Event{
		{Kind: Connect, ClientID: "c", Node: "n", Time: at, Protocol: 5, Username: "u", Remote: "127.0.0.1:1", CleanStart: &yes, SessionExpiry: &expiry, SessionPresent: &yes},
		{Kind: Disconnect, ClientID: "c", Time: at, Reason: ReasonTakenOver, ReasonCode: &code, Error: "e"},
		{Kind: Subscribe, ClientID: "c", Time: at, Subscriptions: []Subscription{{Filter: "a/+", Group: "g", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: 7, ReasonCode: 1}}},
		{Kind: Delivered, ClientID: "c", Node: "n", Time: at, Topic: "t", MessageID: "m", QoS: &qos, PacketID: 9},
	} {
		r, err := Encode("t", e)
		require.NoError(f, err)
		f.Add(Version, r.Value)
	}
	f.Add("2", []byte(`{"event":"connect","clientId":"c"}`))
	f.Add(Version, []byte(`{"event":"delivered","clientId":"c","time":"2026-01-02T03:04:05+01:00","subscriptions":[]}`))
	f.Fuzz(func(t *testing.T, version string, value []byte) {
		r := &kgo.Record{Key: []byte("k"), Value: value, Headers: []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte(version)}}}
		var e *Event
		var err error
		bytesAllocated := allocatedBy(func() { e, err = Decode(r) })
		require.LessOrEqual(t, bytesAllocated, allocationBound(len(value)+len(version)), "decoding %d bytes", len(value))
		if err != nil {
			require.ErrorIs(t, err, ErrInvalid)
			require.Nil(t, e)
			return
		}
		r2, err := Encode("t", e)
		require.NoError(t, err, "a decoded event encodes")
		again, err := Decode(r2)
		require.NoError(t, err, "a re-encoded event decodes: %s", r2.Value)
		requireSameEvent(t, e, again)
		if b, ok := appendEvent(nil, e); ok {
			j, err := json.Marshal(e)
			require.NoError(t, err)
			require.Equal(t, string(j), string(b), "the fast path writes what encoding/json writes")
		}
	})
}

// requireSameEvent compares what two events say: the same instant (JSON
// keeps the instant, not the time.Location), and no subscriptions the same
// as an empty list (the JSON leaves both out).
func requireSameEvent(t *testing.T, want, got *Event) {
	t.Helper()
	require.True(t, want.Time.Equal(got.Time), "time %v, then %v", want.Time, got.Time)
	w, g := *want, *got
	w.Time, g.Time = time.Time{}, time.Time{}
	if len(w.Subscriptions) == 0 {
		w.Subscriptions = nil
	}
	require.Equal(t, w, g)
}

// allocatedBy returns the bytes the heap allocated while f ran. Small
// allocations are counted a span at a time, so it is exact only to a few
// hundred KiB; large ones, the ones a hostile length prefix would cause, are
// counted as they happen.
func allocatedBy(f func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// allocationBound is what decoding n bytes may allocate: a generous
// multiple of n, plus the slack of allocatedBy.
func allocationBound(n int) uint64 { return 64*uint64(n) + 1<<20 }
