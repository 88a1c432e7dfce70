package session

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

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
	added, err := s.Subscribe(ctx, cid, epoch, []Subscription{plain, shared})
	require.NoError(t, err)
	assert.Equal(t, []SubscribeOutcome{SubscriptionAdded, SubscriptionAdded}, added)

	// The same filter again replaces the options [MQTT-3.8.4-3].
	plain.QoS, plain.RetainAsPublished, plain.RetainHandling = 0, true, 1
	added, err = s.Subscribe(ctx, cid, epoch, []Subscription{plain})
	require.NoError(t, err)
	assert.Equal(t, []SubscribeOutcome{SubscriptionReplaced}, added)

	subs, err := s.Subscriptions(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []Subscription{plain, shared}, subs, "sorted by group then filter, plain first")

	existed, err := s.Unsubscribe(ctx, cid, epoch, []FilterKey{shared.FilterKey, {Filter: "never/subscribed"}})
	require.NoError(t, err)
	assert.Equal(t, []bool{true, false}, existed)
	subs, err = s.Subscriptions(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []Subscription{plain}, subs)

	added, err = s.Subscribe(ctx, cid, epoch, nil)
	require.NoError(t, err)
	assert.Empty(t, added)

	subs, err = s.Subscriptions(ctx, clientID(t, "nobody"))
	require.NoError(t, err)
	assert.Empty(t, subs)
}

func sub(filter string) Subscription {
	return Subscription{FilterKey: FilterKey{Filter: filter}, QoS: 1}
}

func TestSubscribeHoldsTheBoundOnSubscriptions(t *testing.T) {
	s, _ := newTestStore(t, func(c *Config) { c.MaxSubscriptions = 3 })
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	shared := Subscription{FilterKey: FilterKey{Group: "g", Filter: "a"}, QoS: 1}

	got, err := s.Subscribe(ctx, cid, epoch, []Subscription{sub("a"), shared})
	require.NoError(t, err)
	assert.Equal(t, []SubscribeOutcome{SubscriptionAdded, SubscriptionAdded}, got, "a shared subscription counts like any other")

	got, err = s.Subscribe(ctx, cid, epoch, []Subscription{sub("b"), sub("c"), sub("a"), sub("d")})
	require.NoError(t, err)
	assert.Equal(t, []SubscribeOutcome{SubscriptionAdded, SubscriptionOverQuota, SubscriptionReplaced, SubscriptionOverQuota}, got,
		"only the new filters beyond the bound are refused; a replacement at the bound is not new")
	assert.False(t, got[1].Stored())
	assert.True(t, got[2].Stored())

	subs, err := s.Subscriptions(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, []Subscription{sub("a"), sub("b"), shared}, subs, "the refused filters are not stored")

	_, err = s.Unsubscribe(ctx, cid, epoch, []FilterKey{{Filter: "b"}})
	require.NoError(t, err)
	got, err = s.Subscribe(ctx, cid, epoch, []Subscription{sub("c")})
	require.NoError(t, err)
	assert.Equal(t, []SubscribeOutcome{SubscriptionAdded}, got, "an unsubscribe frees its place")
}

func TestSubscribeBoundHoldsForConcurrentSubscribes(t *testing.T) {
	const bound, tries = 5, 40
	s, _ := newTestStore(t, func(c *Config) { c.MaxSubscriptions = bound })
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for i := range tries {
		wg.Go(func() {
			got, err := s.Subscribe(ctx, cid, epoch, []Subscription{sub(fmt.Sprintf("f/%d", i))})
			assert.NoError(t, err)
			if len(got) == 1 && got[0] == SubscriptionAdded {
				mu.Lock()
				added++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, bound, added)
	subs, err := s.Subscriptions(ctx, cid)
	require.NoError(t, err)
	assert.Len(t, subs, bound, "the script checks and adds in one step: no SUBSCRIBE overtakes another")
}

func TestSubscribeWithoutABoundTakesEverySubscription(t *testing.T) {
	s, _ := newTestStore(t, func(c *Config) { c.MaxSubscriptions = 0 })
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	many := make([]Subscription, 300)
	for i := range many {
		many[i] = sub(fmt.Sprintf("f/%d", i))
	}
	got, err := s.Subscribe(ctx, cid, epoch, many)
	require.NoError(t, err)
	for i, o := range got {
		require.Equal(t, SubscriptionAdded, o, "subscription %d", i)
	}
}

func TestExpiryCapsWhatTheClientAsks(t *testing.T) {
	c := Config{MaxExpiry: time.Hour, MQTT3Expiry: 10 * time.Minute}
	for _, tc := range []struct {
		name      string
		protocol  byte
		clean     bool
		requested uint32
		want      uint32
	}{
		{"an MQTT 5 interval under the maximum is kept", 5, false, 60, 60},
		{"an MQTT 5 interval of 0 ends the session with the connection", 5, true, 0, 0},
		{"an MQTT 5 interval above the maximum is capped", 5, false, 7200, 3600},
		{"never (0xFFFFFFFF) is capped", 5, false, math.MaxUint32, 3600},
		{"an MQTT 3.1.1 clean session ends with the connection", 4, true, 0, 0},
		{"an MQTT 3.1.1 persistent session gets the configured expiry", 4, false, 0, 600},
		{"so does an MQTT 3.1 one", 3, false, 0, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, c.Expiry(tc.protocol, tc.clean, tc.requested))
		})
	}
}
