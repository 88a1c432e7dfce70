package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLength is the longest topic name or filter in bytes: both are UTF-8
// encoded strings with a two-byte length prefix [MQTT-4.7.3-3].
const MaxLength = 65535

// SharePrefix starts the topic filter of a shared subscription,
// "$share/{ShareName}/{filter}" [MQTT-4.8.2-1].
const SharePrefix = "$share/"

// Errors returned by this package. They are wrapped with the rule that was
// broken; test for them with errors.Is.
var (
	// ErrInvalidFilter means a topic filter breaks the rules of MQTT section
	// 4.7 or 4.8.2. A server answers it with SUBACK reason code 0x8F (Topic
	// Filter invalid) in MQTT 5 and 0x80 (Failure) in MQTT 3.1.1.
	ErrInvalidFilter = errors.New("invalid topic filter")
	// ErrInvalidName means a topic name breaks the rules of MQTT section 4.7.
	// A server answers a PUBLISH with it with reason code 0x90 (Topic Name
	// invalid) in MQTT 5 and closes the connection in MQTT 3.1.1.
	ErrInvalidName = errors.New("invalid topic name")
	// ErrInvalidSubscription means a Subscription cannot be indexed: see
	// Subscription.Validate.
	ErrInvalidSubscription = errors.New("invalid subscription")
)

// ValidateName reports whether topic is a valid topic name, the topic a
// PUBLISH is sent to. It returns an error wrapping ErrInvalidName when it is
// not.
//
// Topic names beginning with "$" are valid here: whether a client may publish
// to them is an authorisation decision, not a syntax one (section 4.7.2).
func ValidateName(topic string) error {
	if err := checkString(topic); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	// The Topic Name in the PUBLISH packet MUST NOT contain wildcard
	// characters [MQTT-3.3.2-2]; wildcards MUST NOT be used within a Topic
	// Name [MQTT-4.7.0-1] (v5) / [MQTT-4.7.1-1] (v3.1.1).
	if i := strings.IndexAny(topic, "+#"); i >= 0 {
		return fmt.Errorf("%w: wildcard %q at byte %d", ErrInvalidName, topic[i], i)
	}
	return nil
}

// ValidateFilter reports whether filter is a valid topic filter, including
// the "$share/{ShareName}/{filter}" form of a shared subscription. It returns
// an error wrapping ErrInvalidFilter when it is not.
func ValidateFilter(filter string) error {
	_, _, _, err := ParseShared(filter)
	return err
}

// ParseShared validates filter and splits a shared subscription
// "$share/{ShareName}/{filter}" into its group (the ShareName) and the topic
// filter that is matched. A filter without the prefix is returned unchanged
// with shared false. The error wraps ErrInvalidFilter.
//
// The filter part of a shared subscription is an ordinary filter: in
// "$share/a/$share/b/c" it is "$share/b/c", which matches the topic name
// "$share/b/c".
func ParseShared(filter string) (group, topicFilter string, shared bool, err error) {
	if err := checkString(filter); err != nil {
		return "", "", false, fmt.Errorf("%w: %w", ErrInvalidFilter, err)
	}
	rest, shared := strings.CutPrefix(filter, SharePrefix)
	if !shared {
		if err := checkLevels(filter); err != nil {
			return "", "", false, fmt.Errorf("%w: %w", ErrInvalidFilter, err)
		}
		return "", filter, false, nil
	}
	group, topicFilter, found := strings.Cut(rest, "/")
	switch {
	case group == "":
		// A Shared Subscription's Topic Filter MUST start with $share/ and
		// MUST contain a ShareName that is at least one character long
		// [MQTT-4.8.2-1].
		return "", "", false, fmt.Errorf("%w: empty share name", ErrInvalidFilter)
	case !found:
		// The ShareName [...] MUST be followed by a "/" character. This "/"
		// character MUST be followed by a Topic Filter [MQTT-4.8.2-2].
		return "", "", false, fmt.Errorf("%w: no topic filter after the share name", ErrInvalidFilter)
	}
	if err := checkShareName(group); err != nil {
		return "", "", false, fmt.Errorf("%w: %w", ErrInvalidFilter, err)
	}
	if topicFilter == "" {
		// [MQTT-4.8.2-2], and every filter is at least one character long
		// [MQTT-4.7.3-1].
		return "", "", false, fmt.Errorf("%w: empty topic filter after the share name", ErrInvalidFilter)
	}
	if err := checkLevels(topicFilter); err != nil {
		return "", "", false, fmt.Errorf("%w: %w", ErrInvalidFilter, err)
	}
	return group, topicFilter, true, nil
}

// checkShareName checks a ShareName that was cut at the first "/".
func checkShareName(group string) error {
	if group == "" {
		return errors.New("empty share name") // [MQTT-4.8.2-1]
	}
	// The ShareName MUST NOT contain the characters "/", "+" or "#"
	// [MQTT-4.8.2-2].
	if i := strings.IndexAny(group, "/+#"); i >= 0 {
		return fmt.Errorf("share name contains %q", group[i])
	}
	return nil
}

// checkString applies the rules every topic name and filter shares.
func checkString(s string) error {
	switch {
	case s == "":
		// All Topic Names and Topic Filters MUST be at least one character
		// long [MQTT-4.7.3-1].
		return errors.New("empty")
	case len(s) > MaxLength:
		// [...] they MUST NOT encode to more than 65,535 bytes [MQTT-4.7.3-3].
		return fmt.Errorf("%d bytes, more than %d", len(s), MaxLength)
	case !utf8.ValidString(s):
		// The character data MUST be well-formed UTF-8, and MUST NOT include
		// encodings of code points between U+D800 and U+DFFF
		// [MQTT-1.5.4-1] (v5) / [MQTT-1.5.3-1] (v3.1.1). Go's decoder rejects
		// encoded surrogates as ill-formed.
		return errors.New("not well-formed UTF-8")
	}
	// Topic Names and Topic Filters MUST NOT include the null character
	// (Unicode U+0000) [MQTT-4.7.3-2]; [MQTT-1.5.4-2] (v5) / [MQTT-1.5.3-2]
	// (v3.1.1). Control characters and non-characters are only "SHOULD NOT"
	// (section 1.5.4) and are accepted, as most brokers do.
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("null character at byte %d", i)
	}
	return nil
}

// checkLevels checks where the wildcards of a (non-shared) filter stand.
// Scanning bytes is safe: no byte of a multi-byte UTF-8 sequence is ASCII.
func checkLevels(filter string) error {
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case '#':
			// The multi-level wildcard character MUST be specified either on
			// its own or following a topic level separator. In either case it
			// MUST be the last character specified in the Topic Filter
			// [MQTT-4.7.1-1] (v5) / [MQTT-4.7.1-2] (v3.1.1).
			if i > 0 && filter[i-1] != '/' {
				return fmt.Errorf("'#' at byte %d does not occupy a whole level", i)
			}
			if i != len(filter)-1 {
				return fmt.Errorf("'#' at byte %d is not the last character", i)
			}
		case '+':
			// The single-level wildcard [...] MUST occupy an entire level of
			// the filter [MQTT-4.7.1-2] (v5) / [MQTT-4.7.1-3] (v3.1.1).
			if (i > 0 && filter[i-1] != '/') || (i+1 < len(filter) && filter[i+1] != '/') {
				return fmt.Errorf("'+' at byte %d does not occupy a whole level", i)
			}
		}
	}
	return nil
}
