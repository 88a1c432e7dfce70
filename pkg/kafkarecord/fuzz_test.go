package kafkarecord

import (
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzDecodeAllocation feeds Decode arbitrary keys, values and headers (the
// round trip is FuzzDecode's): Decode allocates in proportion to the record,
// whatever its headers hold, and never copies the value.
func FuzzDecodeAllocation(f *testing.F) {
	full := Encode("t", fullMessage())
	f.Add(full.Key, full.Value, encodeHeaders(full.Headers))
	f.Add([]byte("c"), []byte("p"), encodeHeaders([]kgo.RecordHeader{{Key: HeaderUserPrefix + "k", Value: []byte("v")}, {Key: "x", Value: nil}}))
	f.Fuzz(func(t *testing.T, key, value, rawHeaders []byte) {
		r := &kgo.Record{Key: key, Value: value, Timestamp: time.UnixMilli(1_700_000_000_000), Headers: decodeHeaders(rawHeaders)}
		var m *Message
		var err error
		bytesAllocated := allocatedBy(func() { m, err = Decode(r) })
		require.LessOrEqual(t, bytesAllocated, allocationBound(len(key)+len(rawHeaders)), "decoding a record of %d bytes besides its value", len(key)+len(rawHeaders))
		if err == nil && len(value) > 0 {
			require.Same(t, &value[0], &m.Payload[0], "the payload is the record's value, not a copy")
		}
	})
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
