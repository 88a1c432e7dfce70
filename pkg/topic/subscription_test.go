package topic

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSubscriptionValidate(t *testing.T) {
	ok := Subscription{ClientID: "c", Filter: "a/+", QoS: 2, RetainHandling: 2, Identifier: MaxIdentifier, RetainAsPublished: true, NoLocal: true}
	for _, tc := range []struct {
		name        string
		edit        func(s *Subscription)
		errContains string // empty: valid
	}{
		{"a subscription with every option set is valid", func(*Subscription) {}, ""},
		{"a shared subscription is valid", func(s *Subscription) { s.Group, s.NoLocal = "g", false }, ""},
		{"an MQTT 3.1.1 subscription with zero options is valid", func(s *Subscription) { *s = Subscription{ClientID: "c", Filter: "#"} }, ""},
		{"an empty client id is refused", func(s *Subscription) { s.ClientID = "" }, "empty client id"},
		{"an invalid filter is refused", func(s *Subscription) { s.Filter = "a/#/b" }, "invalid topic filter"},
		{"an empty filter is refused [MQTT-4.7.3-1]", func(s *Subscription) { s.Filter = "" }, "invalid topic filter"},
		{"a filter still carrying $share/ is refused", func(s *Subscription) { s.Filter = "$share/g/a" }, "ParseShared"},
		{"a $share/ filter part of a shared subscription is an ordinary filter", func(s *Subscription) { s.Group, s.NoLocal, s.Filter = "g", false, "$share/h/a" }, ""},
		{"a share name with / is refused [MQTT-4.8.2-2]", func(s *Subscription) { s.Group, s.NoLocal = "a/b", false }, "share name"},
		{"a share name with + is refused [MQTT-4.8.2-2]", func(s *Subscription) { s.Group, s.NoLocal = "+", false }, "share name"},
		{"a share name with # is refused [MQTT-4.8.2-2]", func(s *Subscription) { s.Group, s.NoLocal = "#", false }, "share name"},
		{"a shared filter longer than 65535 bytes on the wire is refused [MQTT-4.7.3-3]", func(s *Subscription) {
			s.Group, s.NoLocal, s.Filter = "g", false, strings.Repeat("a", MaxLength-len("$share/g/"))+"a"
		}, "more than"},
		{"a shared filter of exactly 65535 bytes on the wire is valid [MQTT-4.7.3-3]", func(s *Subscription) {
			s.Group, s.NoLocal, s.Filter = "g", false, strings.Repeat("a", MaxLength-len("$share/g/"))
		}, ""},
		{"no local on a shared subscription is refused [MQTT-3.8.3-4]", func(s *Subscription) { s.Group = "g" }, "no local"},
		{"qos 3 is refused", func(s *Subscription) { s.QoS = 3 }, "qos 3"},
		{"retain handling 3 is refused", func(s *Subscription) { s.RetainHandling = 3 }, "retain handling 3"},
		{"an identifier above 268435455 is refused", func(s *Subscription) { s.Identifier = MaxIdentifier + 1 }, "subscription identifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			err := s.Validate()
			if tc.errContains == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidSubscription)
			assert.Contains(t, err.Error(), tc.errContains)
		})
	}
}

func TestSubscriptionSharedFilter(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  Subscription
		want string
	}{
		{"a non-shared subscription returns its filter", Subscription{Filter: "a/+"}, "a/+"},
		{"a shared subscription returns the $share form", Subscription{Filter: "a/+", Group: "g"}, "$share/g/a/+"},
		{"an empty first level survives the round trip", Subscription{Filter: "/finance", Group: "consumer1"}, "$share/consumer1//finance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.sub.SharedFilter())
			group, filter, _, err := ParseShared(tc.sub.SharedFilter())
			require.NoError(t, err)
			assert.Equal(t, tc.sub.Group, group)
			assert.Equal(t, tc.sub.Filter, filter)
		})
	}
}

func TestSubscriptionMaxIdentifierIsTheLargestVariableByteInteger(t *testing.T) {
	assert.Equal(t, 1<<28-1, MaxIdentifier)
}
