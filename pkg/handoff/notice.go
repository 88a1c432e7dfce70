package handoff

import (
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// Notice tells a node which of its sessions got messages.
type Notice struct {
	// ClientIDs are sessions with new messages in their queues, to take.
	ClientIDs []string
	// Direct are messages already in the inflight hashes of sessions
	// connected to the node (session.OutcomeDirect), to write as they are.
	Direct []DirectMessage
}

// DirectMessage is a message handed straight to a connected session.
type DirectMessage struct {
	ClientID string
	// Epoch is the connection the message was handed to.
	Epoch    uint64
	PacketID uint16
	Seq      uint64
	Message  []byte // EncodeMessage
	Expiry   time.Time
}

// NotifyChannel is the Redis pub/sub channel of node's notices: each
// frontend subscribes to its own. The dispatcher learns the node of every
// connected session from the enqueue itself (session.EnqueueResult.Node),
// so a notice costs only the node that holds the session.
func NotifyChannel(node string) string { return "fg:notify:" + node }

// ControlChannel is the Redis pub/sub channel of frontend-to-frontend
// control messages for node (a session taken over on another node).
func ControlChannel(node string) string { return "fg:control:" + node }

// EncodeNotice encodes n as the dispatcher publishes it on NotifyChannel.
func EncodeNotice(n Notice) string {
	if len(n.Direct) == 0 && textSafe(n.ClientIDs) {
		return strings.Join(n.ClientIDs, "\x00")
	}
	size := 1 + 2*binary.MaxVarintLen64
	for _, id := range n.ClientIDs {
		size += binary.MaxVarintLen64 + len(id)
	}
	for _, d := range n.Direct {
		size += 6*binary.MaxVarintLen64 + len(d.ClientID) + len(d.Message)
	}
	var b strings.Builder
	b.Grow(size)
	var tmp [binary.MaxVarintLen64]byte
	uvarint := func(v uint64) { b.Write(binary.AppendUvarint(tmp[:0], v)) }
	b.WriteByte(0)
	uvarint(uint64(len(n.ClientIDs)))
	for _, id := range n.ClientIDs {
		uvarint(uint64(len(id)))
		b.WriteString(id)
	}
	uvarint(uint64(len(n.Direct)))
	for _, d := range n.Direct {
		uvarint(uint64(len(d.ClientID)))
		b.WriteString(d.ClientID)
		uvarint(d.Epoch)
		uvarint(uint64(d.PacketID))
		uvarint(d.Seq)
		var exp uint64 // unix ms, 0: none
		if !d.Expiry.IsZero() {
			exp = uint64(max(d.Expiry.UnixMilli(), 1))
		}
		uvarint(exp)
		uvarint(uint64(len(d.Message)))
		b.Write(d.Message)
	}
	return b.String()
}

// textSafe reports whether ids survive the text form: none is empty or
// holds U+0000. A client id never does [MQTT-1.5.4-2], but a notice must
// not turn into another one whatever it holds.
func textSafe(ids []string) bool {
	for _, id := range ids {
		if id == "" || strings.IndexByte(id, 0) >= 0 {
			return false
		}
	}
	return true
}

// ParseNotice decodes a notice (EncodeNotice).
func ParseNotice(payload string) (Notice, error) {
	if payload == "" {
		return Notice{}, nil
	}
	if payload[0] != 0 {
		return Notice{ClientIDs: strings.Split(payload, "\x00")}, nil
	}
	d := noticeDecoder{b: []byte(payload[1:])}
	var n Notice
	for range d.count() {
		n.ClientIDs = append(n.ClientIDs, string(d.bytes()))
	}
	c := d.count()
	if c > 0 {
		// Each message takes at least six bytes, which bounds what a
		// malformed count can make this allocate.
		n.Direct = make([]DirectMessage, 0, min(c, uint64(len(d.b))/6))
	}
	for range c {
		m := DirectMessage{ClientID: string(d.bytes()), Epoch: d.uvarint(), PacketID: uint16(d.uvarint()), Seq: d.uvarint()}
		if exp := d.uvarint(); exp > 0 {
			m.Expiry = time.UnixMilli(int64(exp))
		}
		m.Message = d.bytes()
		if d.bad {
			break
		}
		n.Direct = append(n.Direct, m)
	}
	if d.bad || len(d.b) > 0 {
		return Notice{}, errors.New("malformed notice")
	}
	return n, nil
}

// noticeDecoder reads the binary notice; after the first malformed field
// every read returns zero and bad is set.
type noticeDecoder struct {
	b   []byte
	bad bool
}

func (d *noticeDecoder) uvarint() uint64 {
	v, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[k:]
	return v
}

// count reads a number of entries, each at least a byte long: a count
// beyond the bytes left is malformed.
func (d *noticeDecoder) count() uint64 {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.bad, d.b = true, nil
		return 0
	}
	return v
}

func (d *noticeDecoder) bytes() []byte {
	l := d.uvarint()
	if l > uint64(len(d.b)) {
		d.bad, d.b = true, nil
		return nil
	}
	v := d.b[:l:l]
	d.b = d.b[l:]
	return v
}
