package session

import (
	"encoding/json"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The values of a session's Redis keys, as a corrupted or foreign Redis
// could hold them: each decoder returns an error or a value that encodes to
// bytes decoding to the same value, and allocates in proportion to its
// input.

// FuzzDecodeQueueEntry: an entry of fg:{cid}:q, "<expiry-ms>|<message>".
func FuzzDecodeQueueEntry(f *testing.F) {
	f.Add(encodeEntry([]byte("m"), time.Time{}))
	f.Add(encodeEntry([]byte("a|b"), time.UnixMilli(1_700_000_000_000)))
	f.Add(encodeEntry(nil, time.UnixMilli(-5)))
	f.Fuzz(func(t *testing.T, v string) {
		var msg []byte
		var exp time.Time
		var err error
		requireBoundedAllocation(t, len(v), func() { msg, exp, err = decodeEntry(v) })
		if err != nil {
			return
		}
		msg2, exp2, err := decodeEntry(encodeEntry(msg, exp))
		require.NoError(t, err, "a re-encoded entry decodes")
		require.Equal(t, msg, msg2)
		require.Equal(t, exp, exp2)
	})
}

// FuzzDecodeInflight: a field and value of fg:{cid}:inflight, packet id →
// "<seq>|<state>|<expiry-ms>|<message>", as the Lua scripts write them.
func FuzzDecodeInflight(f *testing.F) {
	f.Add("7", "42|P|"+encodeEntry([]byte("m"), time.UnixMilli(1_700_000_000_000)))
	f.Add("65535", "18446744073709551615|R|0|")
	f.Add("65536", "1|P|0|m")
	f.Fuzz(func(t *testing.T, field, v string) {
		var im InflightMessage
		var err error
		requireBoundedAllocation(t, len(field)+len(v), func() { im, err = decodeInflight(field, v) })
		if err != nil {
			return
		}
		if im.Released {
			require.Nil(t, im.Message, "a released message keeps nothing")
			require.True(t, im.Expiry.IsZero(), "nor its expiry")
		}
		again, err := decodeInflight(encodeInflight(im))
		require.NoError(t, err, "a re-encoded inflight entry decodes")
		require.Equal(t, im, again)
	})
}

// encodeInflight writes what the Lua scripts write for im (rounds.go,
// queue.go): state P with the queue entry, or R with an empty one.
func encodeInflight(im InflightMessage) (field, value string) {
	field = strconv.Itoa(int(im.PacketID))
	seq := strconv.FormatUint(im.Seq, 10)
	if im.Released {
		return field, seq + "|R|0|"
	}
	return field, seq + "|P|" + encodeEntry(im.Message, im.Expiry)
}

// FuzzDecodeWill: the will field of fg:{cid}:s, the JSON of Will, read by
// ClaimWill and Connect (a taken-over will).
func FuzzDecodeWill(f *testing.F) {
	for _, w := range []Will{
		{Topic: "t"},
		{Topic: "dev/1/status", Payload: []byte("offline"), QoS: 1, Retain: true, DelaySeconds: 30, PayloadFormat: 1,
			MessageExpirySeconds: 60, HasMessageExpiry: true, ContentType: "text/plain", ResponseTopic: "r",
			CorrelationData: []byte{0, 1}, UserProperties: []UserProperty{{Key: "k", Value: "v"}}, Username: "u"},
	} {
		b, err := json.Marshal(w)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{"t":"a","p":"","cd":"","up":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var w Will
		var err error
		requireBoundedAllocation(t, len(b), func() { err = json.Unmarshal(b, &w) })
		if err != nil {
			return
		}
		enc, err := json.Marshal(&w)
		require.NoError(t, err, "a decoded will encodes")
		var again Will
		require.NoError(t, json.Unmarshal(enc, &again), "a re-encoded will decodes")
		require.Equal(t, normalWill(w), again)
	})
}

// normalWill is w as its JSON keeps it: empty payload, correlation data and
// user properties are left out (omitempty), so they come back nil.
func normalWill(w Will) Will {
	if len(w.Payload) == 0 {
		w.Payload = nil
	}
	if len(w.CorrelationData) == 0 {
		w.CorrelationData = nil
	}
	if len(w.UserProperties) == 0 {
		w.UserProperties = nil
	}
	return w
}

// FuzzDecodeSubscription: a field and value of fg:{cid}:subs, group "\x00"
// filter → options byte and optional identifier.
func FuzzDecodeSubscription(f *testing.F) {
	for _, s := range []Subscription{
		{FilterKey: FilterKey{Filter: "a/+"}, QoS: 1},
		{FilterKey: FilterKey{Group: "g", Filter: "#"}, QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: 268_435_455},
	} {
		f.Add(s.field(), s.encode())
	}
	f.Add("f", "\x01\x80\x80\x80\x80\x80\x01")
	f.Fuzz(func(t *testing.T, field, v string) {
		var s Subscription
		var err error
		requireBoundedAllocation(t, len(field)+len(v), func() { s, err = decodeSubscription(parseField(field), v) })
		if err != nil {
			return
		}
		again, err := decodeSubscription(parseField(s.field()), s.encode())
		require.NoError(t, err, "a re-encoded subscription decodes")
		require.Equal(t, s, again)
	})
}

// requireBoundedAllocation runs decode and fails t when it allocated far
// more than its n bytes of input suggest: a generous multiple of n, plus the
// slack of the heap's counter, which counts small allocations a span at a
// time (large ones, which a hostile length would cause, as they happen).
func requireBoundedAllocation(t *testing.T, n int, decode func()) {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	decode()
	metrics.Read(s)
	require.LessOrEqual(t, s[0].Value.Uint64()-before, 64*uint64(n)+1<<20, "decoding %d bytes", n)
}
