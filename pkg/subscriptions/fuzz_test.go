package subscriptions

import (
	"errors"
	"runtime/metrics"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// FuzzDecodeRecord feeds decodeRecord (DecodeChange) arbitrary keys, values
// and version headers, as any producer to the change log could write: it
// returns ErrBadKey or ErrBadValue, or a change that encodes (as Writer
// writes it) to a record decoding to the same change, with options a
// SUBSCRIBE can grant; and it allocates in proportion to the record.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []topic.Subscription{
		{ClientID: "c", Filter: "a/+/b"},
		{ClientID: "dev-1", Group: "g", Filter: "#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: topic.MaxIdentifier},
	} {
		key, err := encodeKey(s.ClientID, KeyOf(s))
		require.NoError(f, err)
		f.Add(key, encodeValue(s), Version)
		f.Add(key, []byte(nil), "") // a tombstone
	}
	f.Add([]byte("c\x00\x00f"), []byte{3, 0x0c, 0x80, 0x80, 0x80, 0x80, 0x10}, Version)
	f.Fuzz(func(t *testing.T, key, value []byte, version string) {
		r := &kgo.Record{Key: key, Value: value}
		if version != "" {
			r.Headers = []kgo.RecordHeader{{Key: VersionHeader, Value: []byte(version)}}
		}
		var c change
		var err error
		bytesAllocated := allocatedBy(func() { c, err = decodeRecord(r) })
		require.LessOrEqual(t, bytesAllocated, allocationBound(len(key)+len(value)+len(version)), "decoding %d bytes", len(key)+len(value))
		if err != nil {
			require.True(t, errors.Is(err, ErrBadKey) || errors.Is(err, ErrBadValue), "%v", err)
			return
		}
		if !c.tombstone {
			require.LessOrEqual(t, c.sub.QoS, byte(2), "a granted QoS is 0, 1 or 2")
			require.LessOrEqual(t, c.sub.RetainHandling, byte(2), "retain handling 3 is a protocol error [MQTT-3.8.3-5]")
		}
		key2, err := encodeKey(c.sub.ClientID, KeyOf(c.sub))
		require.NoError(t, err, "a decoded key encodes")
		r2 := &kgo.Record{Key: key2}
		if !c.tombstone {
			r2.Value = encodeValue(c.sub)
			r2.Headers = []kgo.RecordHeader{{Key: VersionHeader, Value: []byte(Version)}}
		}
		again, err := decodeRecord(r2)
		require.NoError(t, err, "a re-encoded change decodes")
		require.Equal(t, c, again, "a re-encoded change decodes to the same change")
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
