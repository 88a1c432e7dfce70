package session

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
)

// FilterKey names one subscription of a session: a shared subscription
// ($share/Group/Filter) has a Group, a non-shared one an empty Group.
type FilterKey struct {
	Group  string
	Filter string
}

// field is the subscription's field in fg:{cid}:subs: group "\x00" filter.
// Neither may contain U+0000 [MQTT-4.7.3-2], so the split is unambiguous.
func (k FilterKey) field() string { return k.Group + "\x00" + k.Filter }

func parseField(f string) FilterKey {
	g, filter, _ := strings.Cut(f, "\x00")
	return FilterKey{Group: g, Filter: filter}
}

// Subscription is one subscription with its MQTT 5 options [MQTT-3.8.3.1].
//
// Encoding (the value in fg:{cid}:subs): one byte of options laid out as in
// the SUBSCRIBE packet's Subscription Options byte (bits 0-1 maximum QoS,
// bit 2 no local, bit 3 retain as published, bits 4-5 retain handling),
// followed by the subscription identifier as a uvarint when it is not 0.
type Subscription struct {
	FilterKey
	// QoS is the granted maximum QoS.
	QoS byte
	// NoLocal: do not deliver the client's own publications [MQTT-3.8.3-3].
	NoLocal bool
	// RetainAsPublished: keep the RETAIN flag on forwarded messages
	// [MQTT-3.3.1-12].
	RetainAsPublished bool
	// RetainHandling: 0 send retained on subscribe, 1 only if the
	// subscription is new, 2 never [MQTT-3.3.1-9..11].
	RetainHandling byte
	// Identifier is the Subscription Identifier, 0 when absent.
	Identifier uint32
}

func (s Subscription) encode() string {
	b := make([]byte, 1, 1+binary.MaxVarintLen32)
	b[0] = s.QoS&0x03 | (s.RetainHandling&0x03)<<4
	if s.NoLocal {
		b[0] |= 0x04
	}
	if s.RetainAsPublished {
		b[0] |= 0x08
	}
	if s.Identifier != 0 {
		b = binary.AppendUvarint(b, uint64(s.Identifier))
	}
	return string(b)
}

func decodeSubscription(k FilterKey, v string) (Subscription, error) {
	if len(v) == 0 {
		return Subscription{}, fmt.Errorf("empty options for %q", k.Filter)
	}
	o := v[0]
	s := Subscription{
		FilterKey:         k,
		QoS:               o & 0x03,
		NoLocal:           o&0x04 != 0,
		RetainAsPublished: o&0x08 != 0,
		RetainHandling:    (o >> 4) & 0x03,
	}
	if len(v) > 1 {
		id, n := binary.Uvarint([]byte(v[1:]))
		if n <= 0 || n != len(v)-1 || id > 1<<32-1 {
			return Subscription{}, fmt.Errorf("bad subscription identifier for %q", k.Filter)
		}
		s.Identifier = uint32(id)
	}
	return s, nil
}

// subscribeScript: KEYS the session hash and its subscriptions; ARGV the
// epoch, the bound on the subscriptions (0: none), then field and value of
// each subscription. It replies one SubscribeOutcome per subscription. The
// bound is checked here, in the one script that adds subscriptions, so that
// SUBSCRIBEs of a session on two nodes cannot both pass it.
var subscribeScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
local max = tonumber(ARGV[2])
local n = redis.call('HLEN', KEYS[2])
local out = {}
local shared = false
for i = 3, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    out[#out + 1] = 1
  elseif max > 0 and n >= max then
    out[#out + 1] = 2
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
    out[#out + 1] = 0
  end
  if out[#out] ~= 2 and string.byte(ARGV[i], 1) ~= 0 then shared = true end
end
-- A session that ever held a shared subscription keeps its queue and
-- inflight hash SharedHold past its expiry (disconnectScript), for the
-- dispatchers' expiry sweep to hand their shared messages on.
if shared then redis.call('HSET', KEYS[1], 'shared', '1') end
follow(KEYS[2])
return out
`)

// SubscribeOutcome is what Subscribe did with one subscription.
type SubscribeOutcome uint8

const (
	// SubscriptionAdded: the session did not have it; it has now.
	SubscriptionAdded SubscribeOutcome = iota
	// SubscriptionReplaced: the session had one with the same group and
	// filter, replaced by it [MQTT-3.8.4-3]; a replacement never counts
	// against the bound.
	SubscriptionReplaced
	// SubscriptionOverQuota: the session is at its bound on subscriptions
	// (Config.MaxSubscriptions); nothing was stored.
	SubscriptionOverQuota
)

// Stored reports whether the subscription is in the session.
func (o SubscribeOutcome) Stored() bool { return o != SubscriptionOverQuota }

// Subscribe stores subs in the session (replacing a subscription with the
// same group and filter [MQTT-3.8.4-3]) and reports, per subscription,
// whether it was added, replaced an existing one (retain handling 1 sends
// retained messages only for new ones [MQTT-3.3.1-10]) or was refused
// because the session holds Config.MaxSubscriptions already. Call it before
// sending SUBACK.
func (s *Store) Subscribe(ctx context.Context, clientID string, epoch uint64, subs []Subscription) ([]SubscribeOutcome, error) {
	if len(subs) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 2+2*len(subs))
	args = append(args, epochArg(epoch), s.cfg.MaxSubscriptions)
	for _, sub := range subs {
		args = append(args, sub.field(), sub.encode())
	}
	v, err := subscribeScript.Run(ctx, s.rdb, []string{sessionKey(clientID), subsKey(clientID)}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("subscribing %s: %w", clientID, mapErr(err))
	}
	out := make([]SubscribeOutcome, len(v))
	for i, o := range v {
		out[i] = SubscribeOutcome(o)
	}
	return out, nil
}

var unsubscribeScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
local existed = {}
for i = 2, #ARGV do
  existed[#existed + 1] = redis.call('HDEL', KEYS[2], ARGV[i])
end
return existed
`)

// Unsubscribe deletes the named subscriptions and reports, per filter,
// whether it existed (UNSUBACK reason 0x11 otherwise [MQTT-3.11.3]).
func (s *Store) Unsubscribe(ctx context.Context, clientID string, epoch uint64, keys []FilterKey) (existed []bool, err error) {
	if len(keys) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 1+len(keys))
	args = append(args, epochArg(epoch))
	for _, k := range keys {
		args = append(args, k.field())
	}
	v, err := unsubscribeScript.Run(ctx, s.rdb, []string{sessionKey(clientID), subsKey(clientID)}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("unsubscribing %s: %w", clientID, mapErr(err))
	}
	existed = make([]bool, len(v))
	for i, e := range v {
		existed[i] = e == 1
	}
	return existed, nil
}

// Subscriptions returns the session's subscriptions sorted by group and
// filter. A client without a session has none.
func (s *Store) Subscriptions(ctx context.Context, clientID string) ([]Subscription, error) {
	m, err := s.rdb.HGetAll(ctx, subsKey(clientID)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading subscriptions of %s: %w", clientID, err)
	}
	out := make([]Subscription, 0, len(m))
	for f, v := range m {
		sub, err := decodeSubscription(parseField(f), v)
		if err != nil {
			return nil, fmt.Errorf("reading subscriptions of %s: %w", clientID, err)
		}
		out = append(out, sub)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Filter < out[j].Filter
	})
	return out, nil
}
