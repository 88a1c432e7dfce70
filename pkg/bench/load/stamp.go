package load

import (
	"encoding/binary"
	"math/bits"
)

// stampSize is the length of the stamp at the start of every payload of the
// pub/sub workloads; payloads must be at least this long.
const stampSize = 24

// stampMagic marks a stamped payload, so that a stray message on a
// benchmark topic is not taken for one.
const stampMagic = 0x66677362 // "fgsb"

// probePub is the publisher index of the probe messages that tell a
// subscriber's subscription is in effect before the run starts.
const probePub = ^uint32(0)

// stamp is what a subscriber needs to know about a message it receives:
// who sent it, its place in that publisher's sequence, and when it was
// sent (open loop: when it was due) in ns since the start of the run. The
// run's clock is read with time.Since in this one process, so it is
// monotonic: wall-clock steps do not reach the latencies.
type stamp struct {
	pub uint32
	seq uint64
	at  int64
}

// put writes the stamp into b[:stampSize].
func (s stamp) put(b []byte) {
	binary.BigEndian.PutUint32(b[0:], stampMagic)
	binary.BigEndian.PutUint32(b[4:], s.pub)
	binary.BigEndian.PutUint64(b[8:], s.seq)
	binary.BigEndian.PutUint64(b[16:], uint64(s.at))
}

// readStamp reads the stamp at the start of payload; ok is false for a
// payload that does not carry one.
func readStamp(payload []byte) (s stamp, ok bool) {
	if len(payload) < stampSize || binary.BigEndian.Uint32(payload) != stampMagic {
		return s, false
	}
	s.pub = binary.BigEndian.Uint32(payload[4:])
	s.seq = binary.BigEndian.Uint64(payload[8:])
	s.at = int64(binary.BigEndian.Uint64(payload[16:]))
	return s, true
}

// seqSet is a set of sequence numbers from 0 up, as a bitmap: a million
// messages cost 128 KiB. The zero value is empty. Not safe for concurrent
// use.
type seqSet struct {
	words []uint64
	n     int64
}

// add inserts v and reports whether it was new.
func (s *seqSet) add(v uint64) bool {
	w := int(v / 64)
	if w >= len(s.words) {
		grown := make([]uint64, max(w+1, 2*len(s.words)))
		copy(grown, s.words)
		s.words = grown
	}
	bit := uint64(1) << (v % 64)
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	s.n++
	return true
}

// has reports whether v is in the set.
func (s *seqSet) has(v uint64) bool {
	w := int(v / 64)
	return w < len(s.words) && s.words[w]&(uint64(1)<<(v%64)) != 0
}

// len is the number of members.
func (s *seqSet) len() int64 { return s.n }

// missingFrom counts the members of want that s lacks.
func (s *seqSet) missingFrom(want *seqSet) int64 {
	var n int
	for i, w := range want.words {
		var have uint64
		if i < len(s.words) {
			have = s.words[i]
		}
		n += bits.OnesCount64(w &^ have)
	}
	return int64(n)
}
