package topic

import (
	"fmt"
	"strings"
)

// MaxIdentifier is the largest Subscription Identifier, the largest Variable
// Byte Integer (MQTT 5 section 3.8.2.1.2).
const MaxIdentifier = 268_435_455

// Subscription is one subscription of one session, with its MQTT 5 options.
// MQTT 3.1.1 subscriptions leave the MQTT 5 options at their zero values,
// which mean what 3.1.1 does.
type Subscription struct {
	// ClientID identifies the session.
	ClientID string
	// Filter is the topic filter, without the "$share/{Group}/" prefix of a
	// shared subscription (see ParseShared).
	Filter string
	// Group is the ShareName of a shared subscription, empty if the
	// subscription is not shared.
	Group string
	// QoS is the granted maximum QoS, 0, 1 or 2.
	QoS byte
	// NoLocal: messages published by this ClientID are not forwarded to it
	// through this subscription [MQTT-3.8.3-3].
	NoLocal bool
	// RetainAsPublished: messages forwarded through this subscription keep
	// the RETAIN flag they were published with [MQTT-3.3.1-13]; otherwise it
	// is cleared [MQTT-3.3.1-12].
	RetainAsPublished bool
	// RetainHandling says which retained messages are sent when the
	// subscription is made: 0 always, 1 only if it did not exist, 2 never.
	// The index stores it but does not use it: it only matters at SUBSCRIBE.
	RetainHandling byte
	// Identifier is the MQTT 5 Subscription Identifier, 0 for none.
	Identifier uint32
}

// SharedFilter returns the filter as the client sent it: with the
// "$share/{Group}/" prefix for a shared subscription.
func (s Subscription) SharedFilter() string {
	if s.Group == "" {
		return s.Filter
	}
	return SharePrefix + s.Group + "/" + s.Filter
}

// Validate reports whether s can be indexed. The error wraps
// ErrInvalidSubscription and, for a bad filter, ErrInvalidFilter.
func (s Subscription) Validate() error {
	if s.ClientID == "" {
		return fmt.Errorf("%w: empty client id", ErrInvalidSubscription)
	}
	if s.Group == "" && strings.HasPrefix(s.Filter, SharePrefix) {
		// Indexed as it is, it would match the topic name "$share/..."; the
		// caller forgot ParseShared.
		return fmt.Errorf("%w: filter has the %q prefix: split it with ParseShared", ErrInvalidSubscription, SharePrefix)
	}
	if err := checkString(s.Filter); err != nil {
		return fmt.Errorf("%w: %w: %w", ErrInvalidSubscription, ErrInvalidFilter, err)
	}
	if err := checkLevels(s.Filter); err != nil {
		return fmt.Errorf("%w: %w: %w", ErrInvalidSubscription, ErrInvalidFilter, err)
	}
	if s.Group != "" {
		if err := checkShareName(s.Group); err != nil {
			return fmt.Errorf("%w: %w: %w", ErrInvalidSubscription, ErrInvalidFilter, err)
		}
		if n := len(SharePrefix) + len(s.Group) + 1 + len(s.Filter); n > MaxLength {
			// [MQTT-4.7.3-3] applies to the filter on the wire, prefix included.
			return fmt.Errorf("%w: %w: %d bytes, more than %d", ErrInvalidSubscription, ErrInvalidFilter, n, MaxLength)
		}
		if s.NoLocal {
			// It is a Protocol Error to set the No Local bit to 1 on a Shared
			// Subscription [MQTT-3.8.3-4].
			return fmt.Errorf("%w: no local on a shared subscription", ErrInvalidSubscription)
		}
	}
	switch {
	case s.QoS > 2:
		// A Maximum QoS of 3 is a Protocol Error in MQTT 5 and makes the
		// SUBSCRIBE malformed in MQTT 3.1.1 (section 3.8.3 of both).
		return fmt.Errorf("%w: qos %d", ErrInvalidSubscription, s.QoS)
	case s.RetainHandling > 2:
		// It is a Protocol Error to send a Retain Handling value of 3
		// (section 3.8.3.1).
		return fmt.Errorf("%w: retain handling %d", ErrInvalidSubscription, s.RetainHandling)
	case s.Identifier > MaxIdentifier:
		return fmt.Errorf("%w: subscription identifier %d above %d", ErrInvalidSubscription, s.Identifier, MaxIdentifier)
	}
	return nil
}
