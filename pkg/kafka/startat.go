package kafka

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// StartAtStart is the start position that reads a partition without a
// committed offset from its first record: the default of every consumer
// group of fleetgate.
const StartAtStart = "start"

// ParseStartAt parses a consumer group's start position, the place where a
// member starts reading a partition that has no committed offset: a new
// group, a partition added to the topic while the group runs, or a group
// whose offsets Kafka expired (offsets.retention.minutes) after a long
// outage. It is "start" (the zero time: the first record Kafka still holds)
// or an RFC 3339 time (the first record whose timestamp is at or after it).
//
// There is no "end": the log end of a partition without a commit lies past
// every record a frontend already acknowledged there, so starting at it
// would skip them all. An operator who deploys against a topic with history
// to skip names the moment the history ends instead, which skips nothing
// acknowledged after it, whatever partition it is in.
func ParseStartAt(s string) (time.Time, error) {
	if s == StartAtStart {
		return time.Time{}, nil
	}
	if s == "end" {
		return time.Time{}, fmt.Errorf("%q is not accepted: it would skip every acknowledged record of a partition without a committed offset (a new group, an added partition, expired offsets); to skip history, give the RFC 3339 time it ends at", s)
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither start nor an RFC 3339 time (2026-12-01T00:00:00Z)", s)
	}
	return t, nil
}

// resetOffset is where a partition without a committed offset starts for
// ParseStartAt's result after.
func resetOffset(after time.Time) kgo.Offset {
	if after.IsZero() {
		return kgo.NewOffset().AtStart()
	}
	// The first record at or after the time; the end when there is none,
	// which is the same place: every later record is read.
	return kgo.NewOffset().AfterMilli(after.UnixMilli())
}
