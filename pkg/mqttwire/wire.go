package mqttwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"
)

// ErrUnsupported is returned for a packet type this package does not code.
var ErrUnsupported = errors.New("unsupported mqtt packet type")

// Encode appends pk, encoded for pk.ProtocolVersion, to buf.
func Encode(buf *bytes.Buffer, pk packets.Packet) error {
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	default:
		return fmt.Errorf("%w: cannot encode %s", ErrUnsupported, name(pk.FixedHeader.Type))
	}
	if err != nil {
		return fmt.Errorf("encoding %s: %w", name(pk.FixedHeader.Type), err)
	}
	return nil
}

// Read reads and decodes the next packet of a connection that speaks the
// given protocol version. scratch is reused for the packet body when large
// enough, and the possibly grown buffer is returned for the next call; a
// PUBLISH payload aliases it until then (its topic and properties do not,
// nor does anything of another packet).
func Read(br *bufio.Reader, version byte, scratch []byte) (packets.Packet, []byte, error) {
	var pk packets.Packet
	hb, err := br.ReadByte()
	if err != nil {
		return pk, scratch, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, scratch, fmt.Errorf("decoding fixed header: %w", err)
	}
	n, _, err := packets.DecodeLength(br)
	if err != nil {
		return pk, scratch, fmt.Errorf("decoding remaining length: %w", err)
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = version
	body, scratch, err := readBody(br, n, scratch)
	if err != nil {
		return pk, scratch, fmt.Errorf("reading %s body: %w", name(pk.FixedHeader.Type), err)
	}
	if pk.FixedHeader.Type != packets.Publish {
		// mochi's decoders alias strings and byte slices to the body; only
		// a PUBLISH payload may alias scratch, which the next Read reuses.
		// The other packets are few: they get a body of their own.
		body = bytes.Clone(body)
	}
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(body)
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
		// mochi's decoder aliases the topic and the properties to the
		// body buffer.
		pk.TopicName = strings.Clone(pk.TopicName)
		cloneProperties(&pk.Properties)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Pingreq, packets.Pingresp:
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		err = fmt.Errorf("%w: %s", ErrUnsupported, name(pk.FixedHeader.Type))
	}
	if err != nil {
		return pk, scratch, fmt.Errorf("decoding %s: %w", name(pk.FixedHeader.Type), err)
	}
	return pk, scratch, nil
}

// bodyChunk is how much of a body readBody allocates before its bytes
// arrive.
const bodyChunk = 64 << 10

// readBody reads a body of n bytes into scratch, or into a buffer that grows
// as the bytes arrive (doubling, from bodyChunk) when scratch is too small:
// a remaining length is the peer's claim, up to 256 MB, and a peer that
// claims it and then closes must not cost 256 MB.
func readBody(br *bufio.Reader, n int, scratch []byte) (body, grown []byte, err error) {
	if cap(scratch) >= n {
		body = scratch[:n]
		_, err = io.ReadFull(br, body)
		return body, scratch, err
	}
	body = make([]byte, 0, min(n, max(bodyChunk, cap(scratch))))
	for len(body) < n {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(n, 2*cap(body))-len(body))
		}
		m, rerr := io.ReadFull(br, body[len(body):min(n, cap(body))])
		body = body[:len(body)+m]
		if rerr == io.EOF && len(body) > 0 {
			rerr = io.ErrUnexpectedEOF // as io.ReadFull of the whole body says
		}
		if rerr != nil {
			return body, body[:0], rerr
		}
	}
	return body, body, nil
}

func name(t byte) string {
	if n, ok := packets.PacketNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}

// cloneProperties gives the strings and byte slices of p memory of their
// own instead of the body buffer they were decoded from.
func cloneProperties(p *packets.Properties) {
	p.CorrelationData = bytes.Clone(p.CorrelationData)
	p.AuthenticationData = bytes.Clone(p.AuthenticationData)
	p.ContentType = strings.Clone(p.ContentType)
	p.ResponseTopic = strings.Clone(p.ResponseTopic)
	p.AssignedClientID = strings.Clone(p.AssignedClientID)
	p.AuthenticationMethod = strings.Clone(p.AuthenticationMethod)
	p.ResponseInfo = strings.Clone(p.ResponseInfo)
	p.ServerReference = strings.Clone(p.ServerReference)
	p.ReasonString = strings.Clone(p.ReasonString)
	if len(p.User) > 0 {
		user := make([]packets.UserProperty, len(p.User))
		for i, u := range p.User {
			user[i] = packets.UserProperty{Key: strings.Clone(u.Key), Val: strings.Clone(u.Val)}
		}
		p.User = user
	}
}
