package retained

import (
	"cmp"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Version orders the updates of one topic. Updates of one topic can reach
// the store out of order: they may be on different Kafka partitions (one per
// publisher), routed by different dispatchers, and a failed batch is routed
// again. The store keeps the update with the highest Version.
type Version struct {
	// TimeMs is when the PUBLISH was received, in Unix milliseconds: the
	// record's timestamp.
	TimeMs int64
	// ID breaks ties between updates of the same millisecond, compared
	// byte by byte: the record's fg.message_id header (a UUIDv7, so it
	// also grows with time). Two updates with equal versions are the same
	// update (a retried batch): the later Apply wins.
	ID string
}

// Compare returns -1, 0 or +1 as v is lower than, equal to or higher than o.
// It is the order the store applies.
func (v Version) Compare(o Version) int {
	if c := cmp.Compare(v.TimeMs, o.TimeMs); c != 0 {
		return c
	}
	return strings.Compare(v.ID, o.ID)
}

// Entry kinds, the first byte of a hash value.
const (
	kindMessage   = 'm'
	kindTombstone = 't'
)

// errMalformed is returned by decodeEntry.
var errMalformed = errors.New("malformed retained entry")

// entry is one value of the retained hash.
type entry struct {
	kind    byte
	version Version
	// at is the message's expiry for a message (zero for never), and when
	// the tombstone may be purged for a tombstone.
	at      time.Time
	message []byte
}

// encode lays e out as
//
//	<kind>|<version-ms>|<at-ms>|<id-length>|<id><message>
//
// with kind "m" (message; at is the expiry, 0 for never) or "t" (tombstone;
// at is when it may be purged, message empty). The id is length-prefixed
// because a record's message id is not guaranteed to be free of "|".
func (e entry) encode() string {
	var at int64
	if !e.at.IsZero() {
		// 0 means never, so an expiry at or before the epoch is 1.
		at = max(e.at.UnixMilli(), 1)
	}
	var b strings.Builder
	b.Grow(4*20 + len(e.version.ID) + len(e.message))
	b.WriteByte(e.kind)
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(e.version.TimeMs, 10))
	b.WriteByte('|')
	b.WriteString(strconv.FormatInt(at, 10))
	b.WriteByte('|')
	b.WriteString(strconv.Itoa(len(e.version.ID)))
	b.WriteByte('|')
	b.WriteString(e.version.ID)
	b.Write(e.message)
	return b.String()
}

// decodeEntry reads what encode wrote. The message is a copy.
func decodeEntry(v string) (entry, error) {
	if len(v) < 2 || (v[0] != kindMessage && v[0] != kindTombstone) || v[1] != '|' {
		return entry{}, errMalformed
	}
	e := entry{kind: v[0]}
	rest := v[2:]
	var nums [3]int64
	for i := range nums {
		f, r, ok := strings.Cut(rest, "|")
		n, err := strconv.ParseInt(f, 10, 64)
		if !ok || err != nil {
			return entry{}, errMalformed
		}
		nums[i], rest = n, r
	}
	if nums[2] < 0 || nums[2] > int64(len(rest)) {
		return entry{}, errMalformed
	}
	e.version = Version{TimeMs: nums[0], ID: rest[:nums[2]]}
	if nums[1] > 0 {
		e.at = time.UnixMilli(nums[1])
	}
	if m := rest[nums[2]:]; len(m) > 0 {
		e.message = []byte(m)
	}
	return e, nil
}

// expired reports whether e is a message whose expiry is at or before now.
func (e entry) expired(now time.Time) bool {
	return e.kind == kindMessage && !e.at.IsZero() && !e.at.After(now)
}

// purgeable reports whether e is a tombstone that may be deleted at now.
func (e entry) purgeable(now time.Time) bool {
	return e.kind == kindTombstone && !e.at.After(now)
}
