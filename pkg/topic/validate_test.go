package topic

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidateFilter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter string
		valid  bool
	}{
		// Examples of MQTT 5 section 4.7.1.2 (multi-level wildcard).
		{"a filter ending in /# is valid (4.7.1.2)", "sport/tennis/player1/#", true},
		{"# on its own is valid (4.7.1.2)", "#", true},
		{"sport/tennis/# is valid (4.7.1.2)", "sport/tennis/#", true},
		{"# not following a separator is invalid [MQTT-4.7.1-1]", "sport/tennis#", false},
		{"# that is not the last level is invalid [MQTT-4.7.1-1]", "sport/tennis/#/ranking", false},
		// Examples of MQTT 5 section 4.7.1.3 (single-level wildcard).
		{"+ on its own is valid (4.7.1.3)", "+", true},
		{"+ before a level and # is valid (4.7.1.3)", "+/tennis/#", true},
		{"+ sharing a level with text is invalid [MQTT-4.7.1-2]", "sport+", false},
		{"+ in a middle level is valid (4.7.1.3)", "sport/+/player1", true},
		{"+ followed by text in its level is invalid [MQTT-4.7.1-2]", "sport/+x/player1", false},
		{"+ preceded by text in its level is invalid [MQTT-4.7.1-2]", "sport/x+/player1", false},
		{"+ as the first and last levels is valid [MQTT-4.7.1-2]", "+/+", true},
		{"+ as the last level after an empty one is valid", "/+", true},
		{"+ then # is valid", "+/#", true},
		{"++ in one level is invalid [MQTT-4.7.1-2]", "a/++/b", false},
		{"## is invalid [MQTT-4.7.1-1]", "##", false},
		{"+# in one level is invalid", "a/+#", false},
		{"#+ is invalid", "#+", false},
		{"# after + in one level is invalid", "+#", false},
		{"# before a separator is invalid [MQTT-4.7.1-1]", "#/", false},
		// Topic level separators and empty levels (4.7.1.1).
		{"a lone separator is a valid filter of two empty levels", "/", true},
		{"a leading separator is valid", "/finance", true},
		{"a trailing separator is valid", "finance/", true},
		{"consecutive separators are valid", "a//b", true},
		{"a space is a valid character", "Accounts payable", true},
		{"a $ filter is valid", "$SYS/#", true},
		{"$ in the middle of a level is valid", "a/b$c/+", true},
		// Section 4.7.3.
		{"an empty filter is invalid [MQTT-4.7.3-1]", "", false},
		{"a null character is invalid [MQTT-4.7.3-2]", "a/\x00/b", false},
		{"a filter of 65535 bytes is valid [MQTT-4.7.3-3]", strings.Repeat("a", MaxLength), true},
		{"a filter of 65536 bytes is invalid [MQTT-4.7.3-3]", strings.Repeat("a", MaxLength+1), false},
		{"ill-formed UTF-8 is invalid [MQTT-1.5.4-1]", "a/\xff/b", false},
		{"an encoded surrogate is invalid [MQTT-1.5.4-1]", "a/\xed\xa0\x80", false},
		{"multi-byte UTF-8 is valid", "gerät/größe/+/温度", true},
		{"a control character other than null is accepted (SHOULD NOT only)", "a/\x01", true},
		// Shared subscriptions, MQTT 5 section 4.8.2.
		{"a shared subscription is valid (4.8.2)", "$share/consumer1/sport/tennis/+", true},
		{"a shared subscription of an empty-first-level filter is valid (4.8.2)", "$share/consumer1//finance", true},
		{"a shared subscription to # is valid", "$share/g/#", true},
		{"an empty share name is invalid [MQTT-4.8.2-1]", "$share//sport", false},
		{"a share name without a filter is invalid [MQTT-4.8.2-2]", "$share/consumer1", false},
		{"a share name followed by an empty filter is invalid [MQTT-4.8.2-2]", "$share/consumer1/", false},
		{"$share/ alone is invalid [MQTT-4.8.2-1]", "$share/", false},
		{"a share name with + is invalid [MQTT-4.8.2-2]", "$share/a+b/sport", false},
		{"a share name that is + is invalid [MQTT-4.8.2-2]", "$share/+/sport", false},
		{"a share name with # is invalid [MQTT-4.8.2-2]", "$share/a#/sport", false},
		{"a share name that is # is invalid [MQTT-4.8.2-2]", "$share/#", false},
		{"an invalid filter part is invalid", "$share/g/sport/tennis#", false},
		{"a filter part that is itself $share/... is an ordinary filter", "$share/g/$share/h/x", true},
		{"$share without a slash is an ordinary filter", "$share", true},
		{"$sharex is an ordinary filter", "$sharex/g/a", true},
		{"$SHARE is not a share prefix: the match is case-sensitive", "$SHARE/g/a", true},
		{"a shared filter with a null in the share name is invalid [MQTT-4.7.3-2]", "$share/g\x00/a", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateFilter(tc.filter)
			if tc.valid {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidFilter)
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		topic string
		valid bool
	}{
		{"a plain name is valid", "sport/tennis/player1", true},
		{"a single level is valid", "sport", true},
		{"a leading separator makes an empty level, valid (4.7.1.1)", "/finance", true},
		{"a trailing separator is valid", "sport/", true},
		{"a lone separator is valid", "/", true},
		{"a space is valid (4.7.3)", "Accounts payable", true},
		{"upper case is valid (4.7.3)", "ACCOUNTS", true},
		{"a $ name is valid syntax (4.7.2)", "$SYS/monitor/Clients", true},
		{"a $share name is valid syntax", "$share/g/a", true},
		{"+ is invalid [MQTT-3.3.2-2] [MQTT-4.7.0-1]", "sport/+", false},
		{"# is invalid [MQTT-3.3.2-2] [MQTT-4.7.0-1]", "sport/#", false},
		{"+ inside a level is invalid [MQTT-3.3.2-2]", "sport/a+b", false},
		{"# inside a level is invalid [MQTT-3.3.2-2]", "sport/a#b", false},
		{"an empty name is invalid [MQTT-4.7.3-1]", "", false},
		{"a null character is invalid [MQTT-4.7.3-2]", "a\x00", false},
		{"a name of 65535 bytes is valid [MQTT-4.7.3-3]", strings.Repeat("/", MaxLength), true},
		{"a name of 65536 bytes is invalid [MQTT-4.7.3-3]", strings.Repeat("/", MaxLength+1), false},
		{"ill-formed UTF-8 is invalid [MQTT-1.5.4-1]", "\xc3\x28", false},
		{"an encoded surrogate is invalid [MQTT-1.5.4-1]", "\xed\xbf\xbf", false},
		{"a byte order mark is kept and valid [MQTT-1.5.4-3]", "\ufeffa", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName(tc.topic)
			if tc.valid {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidName)
		})
	}
}

func TestParseShared(t *testing.T) {
	for _, tc := range []struct {
		name          string
		in            string
		group, filter string
		shared        bool
		wantErr       bool
		errContains   string
	}{
		{name: "a plain filter is returned unchanged", in: "sport/+", filter: "sport/+"},
		{name: "a shared filter is split at the share name", in: "$share/consumer1/sport/tennis/+", group: "consumer1", filter: "sport/tennis/+", shared: true},
		{name: "the filter part may begin with an empty level", in: "$share/consumer1//finance", group: "consumer1", filter: "/finance", shared: true},
		{name: "the filter part may be #", in: "$share/g/#", group: "g", filter: "#", shared: true},
		{name: "the filter part may be a $ filter", in: "$share/g/$SYS/#", group: "g", filter: "$SYS/#", shared: true},
		{name: "the share name may hold any other character", in: "$share/a.b-c$d/x", group: "a.b-c$d", filter: "x", shared: true},
		{name: "an empty share name is refused", in: "$share//x", wantErr: true, errContains: "empty share name"},
		{name: "a missing filter is refused", in: "$share/g", wantErr: true, errContains: "no topic filter"},
		{name: "an empty filter part is refused", in: "$share/g/", wantErr: true, errContains: "empty topic filter"},
		{name: "an invalid filter part is refused", in: "$share/g/a#", wantErr: true, errContains: "'#'"},
		{name: "a wildcard in the share name is refused", in: "$share/g+/x", wantErr: true, errContains: "share name contains"},
		{name: "an invalid plain filter is refused", in: "a/#/b", wantErr: true, errContains: "not the last"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group, filter, shared, err := ParseShared(tc.in)
			if tc.wantErr {
				require.ErrorIs(t, err, ErrInvalidFilter)
				assert.Contains(t, err.Error(), tc.errContains)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.group, group)
			assert.Equal(t, tc.filter, filter)
			assert.Equal(t, tc.shared, shared)
		})
	}
}

func TestSharePrefixIsTheSpecs(t *testing.T) {
	assert.Equal(t, "$share/", SharePrefix)
	assert.Equal(t, 65535, MaxLength)
}
