package topic

import (
	"errors"
	"fmt"
	"strings"
)

// ErrOverLimit means a topic name or filter is valid MQTT but longer or
// deeper than the server's Limits. A server answers it like an invalid one:
// SUBSCRIBE or UNSUBSCRIBE with reason code 0x8F (Topic Filter invalid) in
// MQTT 5 and 0x80 in MQTT 3.1.1, PUBLISH with 0x90 (Topic Name invalid) in
// MQTT 5 and a closed connection in MQTT 3.1.1.
var ErrOverLimit = errors.New("topic over the server's limit")

// Limits bound the topic names and filters a server accepts, below the
// protocol's own bound (MaxLength): each level is a node of the subscription
// index and each byte is carried by every record and delivery of the topic.
// The zero value has no limit but the protocol's.
type Limits struct {
	// MaxLength is the longest topic name or filter, in bytes; 0: MaxLength.
	MaxLength int
	// MaxLevels is the most levels (parts between "/") a topic name or
	// filter may have; 0: no bound.
	MaxLevels int
}

// Check returns an error wrapping ErrOverLimit when s, a topic name or the
// filter of a subscription (of a shared subscription: without its
// "$share/{ShareName}/" prefix), is longer or has more levels than l allows.
// It checks nothing else: validate s first.
func (l Limits) Check(s string) error {
	if l.MaxLength > 0 && len(s) > l.MaxLength {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrOverLimit, len(s), l.MaxLength)
	}
	if l.MaxLevels > 0 {
		if n := strings.Count(s, "/") + 1; n > l.MaxLevels {
			return fmt.Errorf("%w: %d levels, at most %d", ErrOverLimit, n, l.MaxLevels)
		}
	}
	return nil
}
