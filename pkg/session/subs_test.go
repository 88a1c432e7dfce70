package session

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSubscriptionEncodingRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sub     Subscription
		wantLen int
	}{
		{"a plain QoS 0 subscription is one byte", Subscription{FilterKey: FilterKey{Filter: "a/b"}}, 1},
		{"every option set survives", Subscription{FilterKey: FilterKey{Filter: "a/+"}, QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: 268435455}, 5},
		{"a small identifier takes one more byte", Subscription{FilterKey: FilterKey{Group: "g", Filter: "#"}, QoS: 1, RetainHandling: 1, Identifier: 7}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.sub.encode()
			assert.Len(t, v, tc.wantLen)
			got, err := decodeSubscription(parseField(tc.sub.field()), v)
			require.NoError(t, err)
			assert.Equal(t, tc.sub, got)
		})
	}
	_, err := decodeSubscription(FilterKey{Filter: "x"}, "")
	assert.Error(t, err)
	_, err = decodeSubscription(FilterKey{Filter: "x"}, "\x01\x80")
	assert.Error(t, err, "a truncated identifier is rejected")
}

func TestSubscribeAndUnsubscribe(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")

	plain := Subscription{FilterKey: FilterKey{Filter: "sensors/+/temp"}, QoS: 1, Identifier: 3}
	shared := Subscription{FilterKey: FilterKey{Group: "g1", Filter: "sensors/+/temp"}, QoS: 2, NoLocal: true}
	existed, err := s.Subscribe(ctx, cid, epoch, []Subscription{plain, shared})
	require.NoError(t, err)
	assert.Equal(t, []bool{false, false}, existed)

	// The same filter again replaces the options [MQTT-3.8.4-3].
	plain.QoS, plain.RetainAsPublished, plain.RetainHandling = 0, true, 1
	existed, err = s.Subscribe(ctx, cid, epoch, []Subscription{plain})
	require.NoError(t, err)
	assert.Equal(t, []bool{true}, existed)

	subs, err := s.Subscriptions(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []Subscription{plain, shared}, subs, "sorted by group then filter, plain first")

	existed, err = s.Unsubscribe(ctx, cid, epoch, []FilterKey{shared.FilterKey, {Filter: "never/subscribed"}})
	require.NoError(t, err)
	assert.Equal(t, []bool{true, false}, existed)
	subs, err = s.Subscriptions(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []Subscription{plain}, subs)

	existed, err = s.Subscribe(ctx, cid, epoch, nil)
	require.NoError(t, err)
	assert.Empty(t, existed)

	subs, err = s.Subscriptions(ctx, clientID(t, "nobody"))
	require.NoError(t, err)
	assert.Empty(t, subs)
}
