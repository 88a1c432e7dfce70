package retained

import (
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeEntry feeds decodeEntry arbitrary hash values, as a corrupted or
// foreign Redis could hold: it returns errMalformed or an entry that encodes
// to a value decoding to the same entry, and allocates in proportion to the
// value, whatever its id length claims.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range []entry{
		{kind: kindMessage, version: Version{TimeMs: 1_700_000_000_000, ID: "01890a5d-ac96-774b-bcce-b302099a8057"}, message: []byte("m")},
		{kind: kindMessage, version: Version{TimeMs: 5, ID: "a|b"}, at: time.UnixMilli(9), message: []byte("|x|")},
		{kind: kindTombstone, version: Version{TimeMs: -1}, at: time.UnixMilli(1_700_000_000_000)},
	} {
		f.Add(e.encode())
	}
	f.Add("m|1|0|2147483648|x") // an id length far beyond the value
	f.Fuzz(func(t *testing.T, v string) {
		var e entry
		var err error
		bytesAllocated := allocatedBy(func() { e, err = decodeEntry(v) })
		require.LessOrEqual(t, bytesAllocated, allocationBound(len(v)), "decoding %d bytes", len(v))
		if err != nil {
			require.ErrorIs(t, err, errMalformed)
			return
		}
		again, err := decodeEntry(e.encode())
		require.NoError(t, err, "a re-encoded entry decodes")
		require.Equal(t, e, again, "a re-encoded entry decodes to the same entry")
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
