package mqttwire

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEveryPacketTheClientsUseSurvivesEncodeAndRead(t *testing.T) {
	cases := []packets.Packet{
		{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "c1", Keepalive: 30, Clean: true}},
		{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: 0},
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", PacketID: 7, Payload: []byte{0, 1, 2}},
		{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7},
		{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 8},
		{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 8},
		{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: 8},
		{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}},
		{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}},
		{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}},
	}
	for _, version := range []byte{4, 5} {
		var buf bytes.Buffer
		for _, pk := range cases {
			pk.ProtocolVersion = version
			require.NoError(t, Encode(&buf, pk), "%s", name(pk.FixedHeader.Type))
		}
		br := bufio.NewReader(&buf)
		var scratch []byte
		for _, want := range cases {
			got, s, err := Read(br, version, scratch)
			scratch = s
			require.NoError(t, err)
			assert.Equal(t, want.FixedHeader.Type, got.FixedHeader.Type)
			assert.Equal(t, want.PacketID, got.PacketID)
			assert.Equal(t, want.TopicName, got.TopicName)
			if want.FixedHeader.Type == packets.Connect {
				assert.Equal(t, "c1", got.Connect.ClientIdentifier)
			}
		}
		_, _, err := Read(br, version, scratch)
		assert.ErrorIs(t, err, io.EOF)
	}
}

func TestAPublishTopicDoesNotAliasTheReusedBuffer(t *testing.T) {
	var buf bytes.Buffer
	for _, topic := range []string{"first/topic", "other/thing"} {
		require.NoError(t, Encode(&buf, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, ProtocolVersion: 4}))
	}
	br := bufio.NewReader(&buf)
	first, scratch, err := Read(br, 4, make([]byte, 64))
	require.NoError(t, err)
	_, _, err = Read(br, 4, scratch)
	require.NoError(t, err)
	assert.Equal(t, "first/topic", first.TopicName)
}

func TestTruncatedAndUnknownPacketsAreErrors(t *testing.T) {
	_, _, err := Read(bufio.NewReader(bytes.NewReader([]byte{0x30, 0x05, 0x00})), 4, nil)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, _, err = Read(bufio.NewReader(bytes.NewReader([]byte{0xF0, 0x00})), 5, nil)
	assert.Error(t, err)
	assert.ErrorIs(t, Encode(&bytes.Buffer{}, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}}), ErrUnsupported)
}

func TestABodyLargerThanScratchIsReadAsItArrives(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*bodyChunk/16+1) // several growth steps
	var buf bytes.Buffer
	require.NoError(t, Encode(&buf, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t", Payload: payload, ProtocolVersion: 5}))
	pk, scratch, err := Read(bufio.NewReader(&buf), 5, make([]byte, 16))
	require.NoError(t, err)
	assert.Equal(t, payload, pk.Payload)
	assert.GreaterOrEqual(t, cap(scratch), len(payload), "the grown buffer is returned for the next packet")

	// A remaining length of 256 MB with no body is an unexpected EOF, and
	// costs only what arrived (FuzzRead checks the allocation).
	_, _, err = Read(bufio.NewReader(bytes.NewReader([]byte{0x30, 0xff, 0xff, 0xff, 0x7f, 0x00})), 5, nil)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}
