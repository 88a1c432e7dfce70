package mqttwire

import (
	"bufio"
	"bytes"
	"runtime/metrics"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// FuzzRead feeds Read an arbitrary byte stream on a connection of either
// protocol version. Every packet it decodes and Encode can write re-encodes
// to bytes that Read decodes to the same packet (its properties as mochi
// writes them); and Read allocates in
// proportion to the bytes it was given, whatever remaining length a fixed
// header claims (a peer announcing 256 MB and then closing costs nothing).
func FuzzRead(f *testing.F) {
	for _, version := range []byte{4, 5} {
		for _, pk := range fuzzSeedPackets() {
			pk.ProtocolVersion = version
			var buf bytes.Buffer
			require.NoError(f, Encode(&buf, pk))
			f.Add(version, buf.Bytes())
		}
	}
	f.Add(byte(4), []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00})
	f.Fuzz(func(t *testing.T, version byte, data []byte) {
		version = 4 + version%2
		var got []packets.Packet
		var err error
		br := bufio.NewReader(bytes.NewReader(data))
		bytesAllocated := allocatedBy(func() {
			var scratch []byte
			for err == nil {
				var pk packets.Packet
				pk, scratch, err = Read(br, version, scratch)
				if err == nil {
					pk.Payload = bytes.Clone(pk.Payload) // it aliases scratch
					got = append(got, pk)
				}
			}
		})
		require.LessOrEqual(t, bytesAllocated, allocationBound(len(data)), "reading %d bytes", len(data))
		for _, pk := range got {
			if pk.FixedHeader.Type == packets.Connect && pk.ConnectValidate() != packets.CodeSuccess {
				continue // a server refuses it; its flags need not survive
			}
			again, ok := reread(t, version, pk)
			if !ok {
				continue // a type only clients receive (SUBACK, UNSUBACK)
			}
			requireSamePacket(t, pk, again)
			// mochi's encoder leaves out properties a server would not
			// send (response information unless allowed, a Maximum QoS
			// above 1, zero values), so properties must only be stable
			// after one re-encoding.
			twice, _ := reread(t, version, again)
			requireSamePacket(t, again, twice)
			require.Equal(t, again.Properties, twice.Properties)
			require.Equal(t, again.Connect.WillProperties, twice.Connect.WillProperties)
		}
	})
}

// reread encodes pk and reads it back; ok is false for a type Encode does
// not write.
func reread(t *testing.T, version byte, pk packets.Packet) (_ packets.Packet, ok bool) {
	t.Helper()
	var buf bytes.Buffer
	// Framing is Encode's to choose (mochi writes the remaining length a
	// PINGRESP carries as it is; a fresh packet has 0).
	pk.FixedHeader.Remaining = 0
	if Encode(&buf, pk) != nil {
		return pk, false
	}
	encoded := bytes.Clone(buf.Bytes())
	again, _, err := Read(bufio.NewReader(&buf), version, nil)
	require.NoError(t, err, "re-encoded %s: % x", name(pk.FixedHeader.Type), encoded)
	return again, true
}

// requireSamePacket compares what a packet says, not how it was framed,
// properties aside.
func requireSamePacket(t *testing.T, want, got packets.Packet) {
	t.Helper()
	require.Equal(t, want.FixedHeader.Type, got.FixedHeader.Type)
	require.Equal(t, want.FixedHeader.Qos, got.FixedHeader.Qos)
	require.Equal(t, want.FixedHeader.Retain, got.FixedHeader.Retain)
	require.Equal(t, want.FixedHeader.Dup, got.FixedHeader.Dup)
	require.Equal(t, want.PacketID, got.PacketID)
	require.Equal(t, want.TopicName, got.TopicName)
	require.Equal(t, string(want.Payload), string(got.Payload))
	switch want.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		// mochi writes an acknowledgement's reason code only from 0x80 on
		// or with properties; below that it reads back as success.
		if want.ReasonCode < 0x80 && got.ReasonCode == 0 {
			break
		}
		fallthrough
	default:
		require.Equal(t, want.ReasonCode, got.ReasonCode)
	}
	wantConnect, gotConnect := want.Connect, got.Connect
	wantConnect.WillProperties, gotConnect.WillProperties = packets.Properties{}, packets.Properties{}
	require.Equal(t, wantConnect, gotConnect)
}

func fuzzSeedPackets() []packets.Packet {
	return []packets.Packet{
		{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "c1",
			Keepalive: 30, Clean: true, UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("p"),
			WillFlag: true, WillTopic: "w", WillPayload: []byte("bye"), WillQos: 1}},
		{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: 0x87},
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: "a/b", PacketID: 7, Payload: []byte{0, 1, 2},
			Properties: packets.Properties{ContentType: "text/plain", User: []packets.UserProperty{{Key: "k", Val: "v"}}, TopicAlias: 3, TopicAliasFlag: true}},
		{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7, ReasonCode: 0x10},
		{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 8},
		{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 8},
		{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: 8},
		{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: 9, ReasonCodes: []byte{0, 1, 0x80}},
		{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}},
		{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: 0x8e},
	}
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
