package handoff

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNoticesRoundTrip(t *testing.T) {
	ids := Notice{ClientIDs: []string{"a", "b/c", "ü"}}
	got, err := ParseNotice(EncodeNotice(ids))
	require.NoError(t, err)
	assert.Equal(t, ids, got, "a notice of queued sessions only is the ids separated by U+0000")
	assert.Equal(t, "a\x00b/c\x00ü", EncodeNotice(ids))

	exp := time.UnixMilli(1_800_000_000_123)
	full := Notice{
		ClientIDs: []string{"q"},
		Direct: []DirectMessage{
			{ClientID: "d1", Epoch: 7, PacketID: 65535, Seq: 1 << 40, Message: []byte("bin\x00|\xff"), Expiry: exp},
			{ClientID: "d2", PacketID: 1, Seq: 2, Message: []byte{}},
		},
	}
	got, err = ParseNotice(EncodeNotice(full))
	require.NoError(t, err)
	require.Len(t, got.Direct, 2)
	assert.Equal(t, full.ClientIDs, got.ClientIDs)
	assert.Equal(t, full.Direct[0].ClientID, got.Direct[0].ClientID)
	assert.Equal(t, full.Direct[0].Epoch, got.Direct[0].Epoch)
	assert.Equal(t, full.Direct[0].PacketID, got.Direct[0].PacketID)
	assert.Equal(t, full.Direct[0].Seq, got.Direct[0].Seq)
	assert.Equal(t, full.Direct[0].Message, got.Direct[0].Message)
	assert.True(t, exp.Equal(got.Direct[0].Expiry))
	assert.True(t, got.Direct[1].Expiry.IsZero(), "no expiry stays none")
	assert.Empty(t, got.Direct[1].Message)

	enc := EncodeNotice(full)
	for _, cut := range []int{2, len(enc) / 2, len(enc) - 1} {
		_, err := ParseNotice(enc[:cut])
		assert.Error(t, err, "a notice cut at %d of %d bytes is refused", cut, len(enc))
	}
	// A count of direct messages far beyond what the bytes hold is refused
	// too, after allocating for what they could hold at most.
	huge := "\x00\x00" + string(binary.AppendUvarint(nil, 1<<40)) + strings.Repeat("\x01", 60)
	_, err = ParseNotice(huge)
	assert.Error(t, err)
}

// FuzzParseNotice: a notice arrives from Redis pub/sub, from any process
// that can publish there; no payload may crash the frontend, and what
// parses encodes back to an equivalent notice.
func FuzzParseNotice(f *testing.F) {
	f.Add("a\x00b")
	f.Add(EncodeNotice(Notice{ClientIDs: []string{"q"}, Direct: []DirectMessage{{ClientID: "d", Epoch: 1, PacketID: 2, Seq: 3,
		Message: EncodeMessage(&Message{Topic: "t", Payload: []byte("p")}), Expiry: time.UnixMilli(5)}}}))
	f.Fuzz(func(t *testing.T, payload string) {
		n, err := ParseNotice(payload)
		if err != nil {
			return
		}
		enc := EncodeNotice(n)
		again, err := ParseNotice(enc)
		require.NoError(t, err)
		assert.Equal(t, n.ClientIDs, again.ClientIDs)
		require.Len(t, again.Direct, len(n.Direct))
		for i := range n.Direct {
			assert.Equal(t, n.Direct[i].ClientID, again.Direct[i].ClientID)
			assert.Equal(t, n.Direct[i].Seq, again.Direct[i].Seq)
			assert.Equal(t, n.Direct[i].Message, again.Direct[i].Message)
		}
	})
}
