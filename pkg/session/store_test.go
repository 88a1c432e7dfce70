package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConnect(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before runs before the connect under test.
		before func(t *testing.T, s *Store, cid string)
		req    ConnectRequest
		want   ConnectResult // Epoch is not compared
		// wantKept says subscriptions, queue, inflight and rel survived.
		wantKept bool
		// wantInflight are the payloads in flight the result reports.
		wantInflight []string
	}{
		{
			name: "a new client gets no session present",
			req:  ConnectRequest{Node: "n1", ExpirySeconds: 60, Protocol: 5},
			want: ConnectResult{},
		},
		{
			name:         "a persistent session resumed on another node is present and names the previous node",
			before:       seedSession("n1", true),
			req:          ConnectRequest{Node: "n2", ExpirySeconds: 60, Protocol: 5},
			want:         ConnectResult{SessionPresent: true, PreviousNode: "n1", Seq: 1, Queued: true, Subscribed: true}, // the seeded message in flight, one queued, a subscription
			wantKept:     true,
			wantInflight: []string{"m1"},
		},
		{
			name:         "a takeover of a connected session reports that it was connected",
			before:       seedSession("n1", false),
			req:          ConnectRequest{Node: "n2", ExpirySeconds: 60, Protocol: 4},
			want:         ConnectResult{SessionPresent: true, PreviousNode: "n1", WasConnected: true, Seq: 1, Queued: true, Subscribed: true},
			wantKept:     true,
			wantInflight: []string{"m1"},
		},
		{
			name: "a resumed session that never subscribed reports no subscriptions (the node does not poll it)",
			before: func(t *testing.T, s *Store, cid string) {
				_, err := s.Connect(testCtx(t), ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5})
				require.NoError(t, err)
			},
			req:  ConnectRequest{Node: "n1", ExpirySeconds: 60, Protocol: 5},
			want: ConnectResult{SessionPresent: true, PreviousNode: "n1", WasConnected: true},
		},
		{
			name:   "clean start discards the session and reports no session present",
			before: seedSession("n1", true),
			req:    ConnectRequest{Node: "n1", CleanStart: true, Protocol: 5},
			want:   ConnectResult{PreviousNode: "n1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, raw := newTestStore(t, nil)
			ctx := testCtx(t)
			cid := clientID(t, "c")
			if tc.before != nil {
				tc.before(t, s, cid)
			}
			req := tc.req
			req.ClientID = cid
			got, err := s.Connect(ctx, req)
			require.NoError(t, err)
			assert.NotZero(t, got.Epoch)
			tc.want.Epoch = got.Epoch
			var inflight []string
			for _, m := range got.Inflight {
				inflight = append(inflight, string(m.Message))
			}
			assert.Equal(t, tc.wantInflight, inflight, "what the connection resends")
			got.Inflight = nil
			assert.Equal(t, tc.want, got)

			info, err := s.Session(ctx, cid)
			require.NoError(t, err)
			assert.Equal(t, req.Node, info.Node)
			assert.Equal(t, got.Epoch, info.Epoch)
			assert.True(t, info.Connected)
			assert.Equal(t, req.Protocol, info.Protocol)
			assert.Equal(t, req.ExpirySeconds, info.ExpirySeconds)
			assert.WithinDuration(t, time.Now(), info.LastSeen, 5*time.Second)
			for _, k := range sessionKeys(cid) {
				ttl, err := raw.TTL(ctx, k).Result()
				require.NoError(t, err)
				assert.True(t, ttl < 0, "%s keeps a TTL %s after connect", k, ttl)
			}
			n, err := raw.Exists(ctx, subsKey(cid), queueKey(cid), inflightKey(cid), relKey(cid)).Result()
			require.NoError(t, err)
			if tc.wantKept {
				assert.EqualValues(t, 4, n)
			} else {
				assert.Zero(t, n)
			}
			members, err := raw.SMembers(ctx, nodeSessionsKey(req.Node)).Result()
			require.NoError(t, err)
			assert.Contains(t, members, cid)
			if tc.want.PreviousNode != "" && tc.want.PreviousNode != req.Node {
				members, err := raw.SMembers(ctx, nodeSessionsKey(tc.want.PreviousNode)).Result()
				require.NoError(t, err)
				assert.NotContains(t, members, cid)
			}
		})
	}
}

// seedSession connects cid on node with a subscription, a queued message,
// an inflight message and an inbound QoS 2 id, and disconnects it with a
// long expiry when disconnect is set.
func seedSession(node string, disconnect bool) func(t *testing.T, s *Store, cid string) {
	return func(t *testing.T, s *Store, cid string) {
		ctx := testCtx(t)
		epoch := connect(t, s, cid, node)
		_, err := s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}})
		require.NoError(t, err)
		_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("m1")}, {ClientID: cid, Message: []byte("m2")}})
		require.NoError(t, err)
		_, err = s.Take(ctx, cid, epoch, 1)
		require.NoError(t, err)
		_, err = s.MarkReceived(ctx, cid, epoch, 7)
		require.NoError(t, err)
		if disconnect {
			require.NoError(t, s.Disconnect(ctx, cid, epoch, 3600))
		}
	}
}

func TestEpochGrowsAcrossConnectsAndDeletedSessions(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	var last uint64
	for i := 0; i < 5; i++ {
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", CleanStart: i%2 == 0})
		require.NoError(t, err)
		require.Greater(t, res.Epoch, last)
		last = res.Epoch
		if i == 2 {
			// Session expiry 0 deletes the session; the next epoch must
			// still be larger, or a node holding an old epoch could write.
			require.NoError(t, s.Disconnect(ctx, cid, res.Epoch, 0))
		}
	}
}

func TestStaleEpochIsFenced(t *testing.T) {
	s, _ := newTestStore(t, nil)
	for _, tc := range []struct {
		name string
		op   func(s *Store, cid string, epoch uint64) error
	}{
		{"an old connection cannot subscribe", func(s *Store, cid string, e uint64) error {
			_, err := s.Subscribe(testCtx(t), cid, e, []Subscription{{FilterKey: FilterKey{Filter: "x"}}})
			return err
		}},
		{"an old connection cannot unsubscribe", func(s *Store, cid string, e uint64) error {
			_, err := s.Unsubscribe(testCtx(t), cid, e, []FilterKey{{Filter: "x"}})
			return err
		}},
		{"an old connection cannot disconnect the session", func(s *Store, cid string, e uint64) error {
			return s.Disconnect(testCtx(t), cid, e, 0)
		}},
		{"an old connection cannot take from the queue", func(s *Store, cid string, e uint64) error {
			_, err := s.Take(testCtx(t), cid, e, 10)
			return err
		}},
		{"an old connection cannot ack", func(s *Store, cid string, e uint64) error {
			return s.Ack(testCtx(t), cid, e, 1)
		}},
		{"an old connection cannot record a PUBREC", func(s *Store, cid string, e uint64) error {
			return s.PubrecReceived(testCtx(t), cid, e, 1)
		}},
		{"an old connection cannot mark a QoS 2 packet received", func(s *Store, cid string, e uint64) error {
			_, err := s.MarkReceived(testCtx(t), cid, e, 1)
			return err
		}},
		{"an old connection cannot release a QoS 2 packet", func(s *Store, cid string, e uint64) error {
			_, err := s.Released(testCtx(t), cid, e, 1)
			return err
		}},
		{"an old epoch cannot claim the will", func(s *Store, cid string, e uint64) error {
			_, err := s.ClaimWill(testCtx(t), cid, e)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			cid := clientID(t, "c")
			old := connect(t, s, cid, "n1")
			_, err := s.Subscribe(ctx, cid, old, []Subscription{{FilterKey: FilterKey{Filter: "x"}, QoS: 1}})
			require.NoError(t, err)
			_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("m")}})
			require.NoError(t, err)
			_, err = s.Take(ctx, cid, old, 1)
			require.NoError(t, err)
			_, err = s.MarkReceived(ctx, cid, old, 1)
			require.NoError(t, err)
			newer, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60, Will: &Will{Topic: "w"}})
			require.NoError(t, err)
			before, err := raw(t).Dump(ctx, sessionKey(cid)).Result()
			require.NoError(t, err)

			err = tc.op(s, cid, old)
			require.ErrorIs(t, err, ErrFenced)

			after, err := raw(t).Dump(ctx, sessionKey(cid)).Result()
			require.NoError(t, err)
			assert.Equal(t, before, after, "a fenced call changed the session hash")
			subs, err := s.Subscriptions(ctx, cid)
			require.NoError(t, err)
			assert.Len(t, subs, 1)
			inflight, err := s.Inflight(ctx, cid)
			require.NoError(t, err)
			assert.Len(t, inflight, 1)
			already, err := s.MarkReceived(ctx, cid, newer.Epoch, 1)
			require.NoError(t, err)
			assert.True(t, already)
			// The current epoch still works.
			require.NoError(t, tc.op(s, cid, newer.Epoch))
		})
	}
}

func raw(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestOperationsWithoutSessionReturnErrNoSession(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "nobody")
	_, err := s.Subscribe(ctx, cid, 1, []Subscription{{FilterKey: FilterKey{Filter: "x"}}})
	assert.ErrorIs(t, err, ErrNoSession)
	_, err = s.Take(ctx, cid, 1, 1)
	assert.ErrorIs(t, err, ErrNoSession)
	_, err = s.MarkReceived(ctx, cid, 1, 1)
	assert.ErrorIs(t, err, ErrNoSession)
	assert.ErrorIs(t, s.Disconnect(ctx, cid, 1, 10), ErrNoSession)
	_, err = s.Session(ctx, cid)
	assert.ErrorIs(t, err, ErrNoSession)
	n, err := raw.Exists(ctx, sessionKeys(cid)...).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a refused operation created keys")
}

func TestDisconnect(t *testing.T) {
	t.Run("expiry zero deletes every key of the session at once", func(t *testing.T) {
		s, raw := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		seedSession("n1", false)(t, s, cid)
		info, err := s.Session(ctx, cid)
		require.NoError(t, err)
		require.NoError(t, s.Disconnect(ctx, cid, info.Epoch, 0))
		n, err := raw.Exists(ctx, sessionKeys(cid)...).Result()
		require.NoError(t, err)
		assert.Zero(t, n)
		members, err := raw.SMembers(ctx, nodeSessionsKey("n1")).Result()
		require.NoError(t, err)
		assert.NotContains(t, members, cid)
		_, err = s.Session(ctx, cid)
		assert.ErrorIs(t, err, ErrNoSession)
	})
	t.Run("an expiry puts a TTL on every key and they vanish when it passes", func(t *testing.T) {
		s, raw := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		seedSession("n1", false)(t, s, cid)
		info, err := s.Session(ctx, cid)
		require.NoError(t, err)
		require.NoError(t, s.Disconnect(ctx, cid, info.Epoch, 1))
		info, err = s.Session(ctx, cid)
		require.NoError(t, err)
		assert.False(t, info.Connected)
		assert.EqualValues(t, 1, info.ExpirySeconds)
		for _, k := range sessionKeys(cid) {
			ttl, err := raw.PTTL(ctx, k).Result()
			require.NoError(t, err)
			assert.True(t, ttl > 0 && ttl <= time.Second, "%s has TTL %s", k, ttl)
		}
		// A message queued for the disconnected session expires with it.
		res, err := s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("late")}})
		require.NoError(t, err)
		assert.Equal(t, OutcomeQueued, res[0].Outcome)
		require.Eventually(t, func() bool {
			n, err := raw.Exists(ctx, sessionKeys(cid)...).Result()
			return err == nil && n == 0
		}, 5*time.Second, 20*time.Millisecond)
		res, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("too late")}})
		require.NoError(t, err)
		assert.Equal(t, OutcomeNoSession, res[0].Outcome)
	})
	t.Run("the keys a session has get the TTL and lose it on resume, those it lacks stay absent", func(t *testing.T) {
		// The scripts touch the other keys only when one exists: a
		// session with a subscription alone has its hash and that key.
		s, raw := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		epoch := connect(t, s, cid, "n1")
		_, err := s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}})
		require.NoError(t, err)
		require.NoError(t, s.Disconnect(ctx, cid, epoch, 60))
		for _, k := range []string{sessionKey(cid), subsKey(cid)} {
			ttl, err := raw.TTL(ctx, k).Result()
			require.NoError(t, err)
			assert.True(t, ttl > 0 && ttl <= time.Minute, "%s has TTL %s", k, ttl)
		}
		n, err := raw.Exists(ctx, queueKey(cid), inflightKey(cid), relKey(cid)).Result()
		require.NoError(t, err)
		assert.Zero(t, n, "no key is made for what the session does not hold")
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5})
		require.NoError(t, err)
		assert.True(t, res.SessionPresent)
		assert.True(t, res.Subscribed, "the resumed session reports its subscription")
		assert.False(t, res.Queued)
		for _, k := range []string{sessionKey(cid), subsKey(cid)} {
			ttl, err := raw.TTL(ctx, k).Result()
			require.NoError(t, err)
			assert.Equal(t, time.Duration(-1), ttl, "%s keeps no TTL after the resume", k)
		}
	})
	t.Run("the maximum expiry keeps the session without a TTL", func(t *testing.T) {
		s, raw := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		seedSession("n1", false)(t, s, cid)
		info, err := s.Session(ctx, cid)
		require.NoError(t, err)
		require.NoError(t, s.Disconnect(ctx, cid, info.Epoch, math.MaxUint32))
		info, err = s.Session(ctx, cid)
		require.NoError(t, err)
		assert.False(t, info.Connected)
		for _, k := range sessionKeys(cid) {
			ttl, err := raw.TTL(ctx, k).Result()
			require.NoError(t, err)
			assert.Equal(t, time.Duration(-1), ttl, "%s", k)
		}
	})
	t.Run("a reconnect before the expiry keeps the session and removes the TTL", func(t *testing.T) {
		s, raw := newTestStore(t, nil)
		ctx := testCtx(t)
		cid := clientID(t, "c")
		seedSession("n1", false)(t, s, cid)
		info, err := s.Session(ctx, cid)
		require.NoError(t, err)
		require.NoError(t, s.Disconnect(ctx, cid, info.Epoch, 30))
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 30})
		require.NoError(t, err)
		assert.True(t, res.SessionPresent)
		assert.False(t, res.WasConnected)
		for _, k := range sessionKeys(cid) {
			ttl, err := raw.TTL(ctx, k).Result()
			require.NoError(t, err)
			assert.Equal(t, time.Duration(-1), ttl, "%s", k)
		}
	})
}

// keySlot is the Redis Cluster slot of key: CRC16 (XMODEM) of the hash tag,
// the text between the first "{" and the next "}" when non-empty, else of
// the whole key, modulo 16384.
func keySlot(key string) uint16 {
	if i := indexByte(key, '{'); i >= 0 {
		if j := indexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func TestKeySlotMatchesRedisReferenceValues(t *testing.T) {
	// From the Redis Cluster specification: CRC16("123456789") = 0x31C3.
	assert.Equal(t, uint16(0x31C3%16384), keySlot("123456789"))
	assert.Equal(t, keySlot("{user1000}.following"), keySlot("{user1000}.followers"))
	assert.Equal(t, keySlot("foo{}{bar}"), keySlot("foo{}{bar}"))
	assert.NotEqual(t, keySlot("{}a"), keySlot("{}b"), "an empty tag hashes the whole key")
}

func TestEveryKeyOfASessionSharesOneHashSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		cid  string
	}{
		{"a plain client id", "dev-1"},
		{"an id with braces inside", "a{b}c"},
		{"an id starting with a closing brace", "}x"},
		{"an id that is only a closing brace", "}"},
		{"an empty id", ""},
		{"an id that looks like an encoded one", "~7d78"},
		{"a long unicode id", "gerät-äöü-" + string(make([]byte, 100))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := sessionKeys(tc.cid)
			slot := keySlot(keys[0])
			for _, k := range keys {
				assert.Equal(t, slot, keySlot(k), "%q", k)
				assert.Contains(t, k, "{"+tag(tc.cid)+"}")
			}
			assert.Equal(t, keySlot(nodeKey(tc.cid)), keySlot(nodeSessionsKey(tc.cid)))
		})
	}
	assert.NotEqual(t, tag("}x"), tag("~7d78"), "tags must be one-to-one")
	assert.NotEqual(t, tag("~7d78"), "~7d78")
}

func TestErrorsAreSentinels(t *testing.T) {
	assert.True(t, errors.Is(mapErr(errors.New("ERR FG_FENCED")), ErrFenced))
	assert.True(t, errors.Is(mapErr(errors.New("FG_NOSESSION")), ErrNoSession))
}

func TestWritesToADisconnectedSessionExpireWithIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(cid string) string
		op   func(t *testing.T, s *Store, cid string, epoch uint64)
	}{
		{"a queued message", queueKey, func(t *testing.T, s *Store, cid string, _ uint64) {
			_, err := s.Enqueue(testCtx(t), []Delivery{{ClientID: cid, Message: []byte("m")}})
			require.NoError(t, err)
		}},
		{"a subscription", subsKey, func(t *testing.T, s *Store, cid string, epoch uint64) {
			_, err := s.Subscribe(testCtx(t), cid, epoch, []Subscription{{FilterKey: FilterKey{Filter: "x"}}})
			require.NoError(t, err)
		}},
		{"a received QoS 2 id", relKey, func(t *testing.T, s *Store, cid string, epoch uint64) {
			_, err := s.MarkReceived(testCtx(t), cid, epoch, 9)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, raw := newTestStore(t, nil)
			ctx := testCtx(t)
			cid := clientID(t, "c")
			epoch := connect(t, s, cid, "n1")
			require.NoError(t, s.Disconnect(ctx, cid, epoch, 100))
			tc.op(t, s, cid, epoch)
			ttl, err := raw.TTL(ctx, tc.key(cid)).Result()
			require.NoError(t, err)
			assert.True(t, ttl > 90*time.Second && ttl <= 100*time.Second, "TTL %s", ttl)
		})
	}
}

func TestTakeoverReturnsTheWillOfTheConnectionTakenOver(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	w := &Will{Topic: "status/c", Payload: []byte("gone"), QoS: 1, DelaySeconds: 5}
	_, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Will: w})
	require.NoError(t, err)

	// The session is connected on n1: a new connection takes it over and
	// gets the old will, which the old connection can no longer claim.
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60})
	require.NoError(t, err)
	require.True(t, res.WasConnected)
	require.Equal(t, w, res.TakenOverWill)

	// Disconnected sessions are not taken over: their will (if any) is
	// the pending claim's business.
	require.NoError(t, s.Disconnect(ctx, cid, res.Epoch, 60))
	res, err = s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60})
	require.NoError(t, err)
	require.False(t, res.WasConnected)
	require.Nil(t, res.TakenOverWill)
}

func TestASessionRefusesAnotherIdentityAndStaysAsItWas(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clean bool
	}{
		{"a resume by another identity neither takes the session over nor changes it", false},
		{"a clean start by another identity does not wipe the session", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, raw := newTestStore(t, nil)
			ctx := testCtx(t)
			cid := clientID(t, "c")
			res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5, Owner: "device-1"})
			require.NoError(t, err)
			_, err = s.Subscribe(ctx, cid, res.Epoch, []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}})
			require.NoError(t, err)
			_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("m1")}})
			require.NoError(t, err)
			before, err := raw.HGetAll(ctx, sessionKey(cid)).Result()
			require.NoError(t, err)

			for _, owner := range []string{"device-2", ""} {
				_, err = s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", CleanStart: tc.clean, ExpirySeconds: 60, Protocol: 5, Owner: owner})
				require.ErrorIs(t, err, ErrNotOwner)
			}

			after, err := raw.HGetAll(ctx, sessionKey(cid)).Result()
			require.NoError(t, err)
			require.Equal(t, before, after, "the session hash is untouched")
			subs, err := s.Subscriptions(ctx, cid)
			require.NoError(t, err)
			require.Len(t, subs, 1)
			n, err := raw.LLen(ctx, queueKey(cid)).Result()
			require.NoError(t, err)
			require.EqualValues(t, 1, n, "the queued message is still there")

			info, err := s.Session(ctx, cid)
			require.NoError(t, err)
			require.Equal(t, "device-1", info.Owner)

			// Its owner resumes it.
			got, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", ExpirySeconds: 60, Protocol: 5, Owner: "device-1"})
			require.NoError(t, err)
			require.True(t, got.SessionPresent)
		})
	}
}

func TestASessionCreatedAnonymouslyIsOwnedByTheFirstIdentityToResumeIt(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	_, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5})
	require.NoError(t, err)
	got, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5, Owner: "device-1"})
	require.NoError(t, err)
	require.True(t, got.SessionPresent)
	_, err = s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5, Owner: "device-2"})
	require.ErrorIs(t, err, ErrNotOwner)
}

// TestConnectSaysWhenItGaveTheSessionAnOwner: Claimed is what a frontend
// waits for the Redis replicas for before the CONNACK, so it must be set
// whenever the session's owner is new, and only then.
func TestConnectSaysWhenItGaveTheSessionAnOwner(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	connect := func(owner string, clean bool) ConnectResult {
		t.Helper()
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", CleanStart: clean, ExpirySeconds: 60, Protocol: 5, Owner: owner})
		require.NoError(t, err)
		return res
	}
	require.False(t, connect("", false).Claimed, "an anonymous session has no owner to claim")
	require.True(t, connect("device-1", false).Claimed, "an identity resuming an anonymous session claims it")
	require.False(t, connect("device-1", false).Claimed, "its owner resuming it")
	require.False(t, connect("device-1", true).Claimed, "its owner's clean start: the owner was there before")

	require.NoError(t, raw.Del(ctx, sessionKey(cid)).Err())
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", CleanStart: true, Protocol: 5, Owner: "device-1"})
	require.NoError(t, err)
	require.False(t, res.Claimed, "a session that ends with its connection (expiry 0)")
	require.NoError(t, raw.Del(ctx, sessionKey(cid)).Err())
	require.True(t, connect("device-1", false).Claimed, "a new session")

	// An expired session (held for its will) starts anew for whoever
	// connects: a new identity claims it.
	res = connect("device-1", false)
	_, err = s.End(ctx, cid, res.Epoch, 1)
	require.NoError(t, err)
	require.NoError(t, raw.HSet(ctx, sessionKey(cid), "last_seen", "0").Err())
	got := connect("device-2", false)
	require.True(t, got.Claimed, "another identity after the session expired")
	require.False(t, got.SessionPresent)
}

func TestACleanStartHandsThePreviousSubscriptionsToTombstoneBeforeDiscardingThem(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5, Owner: "device-1"})
	require.NoError(t, err)
	want := []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}, {FilterKey: FilterKey{Group: "g", Filter: "b/+"}, QoS: 2, Identifier: 9}}
	_, err = s.Subscribe(ctx, cid, res.Epoch, want)
	require.NoError(t, err)
	before, err := raw.HGetAll(ctx, sessionKey(cid)).Result()
	require.NoError(t, err)

	t.Run("another identity is refused before Tombstone hears of anything", func(t *testing.T) {
		_, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5, Owner: "device-2",
			Tombstone: func(context.Context, []Subscription) error {
				t.Error("Tombstone called for a stranger")
				return nil
			}})
		require.ErrorIs(t, err, ErrNotOwner)
	})
	t.Run("a failing Tombstone fails the CONNECT and discards nothing", func(t *testing.T) {
		boom := errors.New("change log unavailable")
		_, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5, Owner: "device-1",
			Tombstone: func(context.Context, []Subscription) error { return boom }})
		require.ErrorIs(t, err, boom)
		after, err := raw.HGetAll(ctx, sessionKey(cid)).Result()
		require.NoError(t, err)
		require.Equal(t, before, after, "the session hash is untouched")
		n, err := raw.HLen(ctx, subsKey(cid)).Result()
		require.NoError(t, err)
		require.EqualValues(t, 2, n, "the subscriptions are still there")
	})
	t.Run("the owner's clean start tombstones them while they exist, then discards them", func(t *testing.T) {
		var got []Subscription
		res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5, Owner: "device-1",
			Tombstone: func(ctx context.Context, subs []Subscription) error {
				n, err := raw.HLen(ctx, subsKey(cid)).Result()
				require.NoError(t, err)
				require.EqualValues(t, 2, n, "Tombstone runs before the reset")
				got = subs
				return nil
			}})
		require.NoError(t, err)
		require.False(t, res.SessionPresent)
		require.ElementsMatch(t, want, got)
		n, err := raw.Exists(ctx, subsKey(cid)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "the subscriptions are gone")
	})
	t.Run("a clean start without subscriptions does not call Tombstone", func(t *testing.T) {
		_, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5, Owner: "device-1",
			Tombstone: func(context.Context, []Subscription) error {
				t.Error("Tombstone called without subscriptions")
				return nil
			}})
		require.NoError(t, err)
	})
}

func TestEndReturnsTheSubscriptionsOfTheSessionItEnds(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	subs := []Subscription{{FilterKey: FilterKey{Filter: "a/#"}, QoS: 1}, {FilterKey: FilterKey{Filter: "c"}, RetainHandling: 2}}
	for _, tc := range []struct {
		name   string
		expiry uint32
		want   []Subscription
	}{
		{"expiry 0 ends it", 0, subs},
		{"an expiry keeps it", 60, nil},
		{"no expiry keeps it", math.MaxUint32, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cid := clientID(t, "c")
			epoch := connect(t, s, cid, "n1")
			_, err := s.Subscribe(ctx, cid, epoch, subs)
			require.NoError(t, err)
			got, err := s.End(ctx, cid, epoch, tc.expiry)
			require.NoError(t, err)
			require.ElementsMatch(t, tc.want, got.Subscriptions)
			require.Empty(t, got.Shared, "no shared subscription, nothing to hand back")
			n, err := raw.Exists(ctx, sessionKey(cid)).Result()
			require.NoError(t, err)
			require.Equal(t, tc.want == nil, n == 1, "the session is kept unless it ended")
		})
	}
}

// TestAReconnectStormSharesPipelines connects and ends hundreds of sessions
// at once, which the store batches: every one gets its own answer.
func TestAReconnectStormSharesPipelines(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	node := clientID(t, "node")
	const n = 600
	cids := make([]string, n)
	epochs := make([]uint64, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range cids {
		cids[i] = clientID(t, "c")
		if i%3 == 0 {
			connect(t, s, cids[i], "elsewhere") // a session to resume, on a dead node
		}
	}
	for i := range cids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Connect(ctx, ConnectRequest{ClientID: cids[i], Node: node, ExpirySeconds: 60, Protocol: 5, Owner: "o"})
			errs[i], epochs[i] = err, res.Epoch
			if err == nil && res.SessionPresent != (i%3 == 0) {
				errs[i] = fmt.Errorf("%s: session present %v", cids[i], res.SessionPresent)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	members, err := raw.SMembers(ctx, nodeSessionsKey(node)).Result()
	require.NoError(t, err)
	require.ElementsMatch(t, cids, members, "every session is in the node's index")
	for i := range cids {
		info, err := s.Session(ctx, cids[i])
		require.NoError(t, err)
		require.Equal(t, epochs[i], info.Epoch, cids[i])
	}

	// Each subscribes to its own topics at once (a clean session does at
	// every CONNECT): every one gets its own answer, and a SUBSCRIBE of
	// a connection taken over (an older epoch) is fenced.
	outcomes := make([][]SubscribeOutcome, n)
	for i := range cids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			epoch := epochs[i]
			if i%50 == 7 {
				epoch--
			}
			outcomes[i], errs[i] = s.Subscribe(ctx, cids[i], epoch, []Subscription{
				{FilterKey: FilterKey{Filter: "devices/" + cids[i] + "/cmd/#"}, QoS: 1},
			})
		}()
	}
	wg.Wait()
	for i := range cids {
		subs, err := s.Subscriptions(ctx, cids[i])
		require.NoError(t, err)
		if i%50 == 7 {
			require.ErrorIs(t, errs[i], ErrFenced, cids[i])
			require.Empty(t, subs, cids[i])
			continue
		}
		require.NoError(t, errs[i], cids[i])
		require.Equal(t, []SubscribeOutcome{SubscriptionAdded}, outcomes[i], cids[i])
		require.Len(t, subs, 1, cids[i])
		require.Equal(t, "devices/"+cids[i]+"/cmd/#", subs[0].Filter, cids[i])
	}
	clear(errs)

	// A clean start of every one ends it, in a storm of disconnects.
	for i := range cids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.End(ctx, cids[i], epochs[i], 0)
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	members, err = raw.SMembers(ctx, nodeSessionsKey(node)).Result()
	require.NoError(t, err)
	require.Empty(t, members, "ended sessions leave the node's index")
	left, err := raw.SMembers(ctx, nodeSessionsKey("elsewhere")).Result()
	require.NoError(t, err)
	for _, cid := range cids {
		require.NotContains(t, left, cid, "a resumed session leaves the previous node's index")
	}
}

func TestConnectAndEndSurviveALostScriptCache(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	require.NoError(t, raw.ScriptFlush(ctx).Err())
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 60, Protocol: 5})
	require.NoError(t, err)
	require.Greater(t, res.Epoch, epoch)
	require.NoError(t, raw.ScriptFlush(ctx).Err())
	_, err = s.End(ctx, cid, res.Epoch, 0)
	require.NoError(t, err)
}

func TestAConnectFindingNoSessionTakesNothingOfAnExpiredOnesOtherKeys(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	// The hash of an expired session is gone; its other keys outlive it by
	// a moment (their TTLs are set one after the other).
	require.NoError(t, raw.HSet(ctx, subsKey(cid), "old/#", "1").Err())
	require.NoError(t, raw.RPush(ctx, queueKey(cid), "0|stale").Err())
	require.NoError(t, raw.HSet(ctx, inflightKey(cid), "1", "1|P|0|stale").Err())
	for _, k := range sessionKeys(cid)[1:4] {
		require.NoError(t, raw.Expire(ctx, k, time.Minute).Err())
	}

	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", ExpirySeconds: 3600, Protocol: 5})
	require.NoError(t, err)
	assert.False(t, res.SessionPresent, "[MQTT-3.2.2-3] no session was found")
	assert.Empty(t, res.Inflight)
	assert.False(t, res.Queued)
	n, err := raw.Exists(ctx, subsKey(cid), queueKey(cid), inflightKey(cid)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the new session starts without the old one's subscriptions, queue or inflight messages")
	ttl, err := raw.TTL(ctx, sessionKey(cid)).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "a connected session's hash has no TTL")
}

// TestAnEndedSessionReturnsItsSharedSubscriptionsUndeliveredMessages: a
// session that ends with expiry 0 hands back what it held through a shared
// subscription (messages whose first byte is handoff's shared version, 2):
// the unacknowledged inflight messages oldest first, then the queue; not a
// QoS 2 message whose PUBREC came (its receiver has it), not a message of
// its own subscriptions.
func TestAnEndedSessionReturnsItsSharedSubscriptionsUndeliveredMessages(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	shared := func(m string) []byte { return append([]byte{2}, m...) }
	own := func(m string) []byte { return append([]byte{1}, m...) }

	cid := clientID(t, "member")
	epoch := connect(t, s, cid, "n1")
	_, err := s.Subscribe(ctx, cid, epoch, []Subscription{
		{FilterKey: FilterKey{Group: "workers", Filter: "jobs/#"}, QoS: 2},
		{FilterKey: FilterKey{Filter: "own/#"}, QoS: 1},
	})
	require.NoError(t, err)
	expiry := time.UnixMilli(time.Now().Add(time.Hour).UnixMilli())
	_, err = s.Enqueue(ctx, []Delivery{
		{ClientID: cid, Message: shared("s0")},
		{ClientID: cid, Message: own("o1")},
		{ClientID: cid, Message: shared("s2"), Expiry: expiry},
		{ClientID: cid, Message: shared("s3")},
		{ClientID: cid, Message: shared("s4")},
		{ClientID: cid, Message: own("o5")},
		{ClientID: cid, Message: shared("s6|with|bars")},
	})
	require.NoError(t, err)
	got, err := s.Take(ctx, cid, epoch, 4) // s0 o1 s2 s3 in flight
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.NoError(t, s.Ack(ctx, cid, epoch, got[0].PacketID))            // s0 delivered
	require.NoError(t, s.PubrecReceived(ctx, cid, epoch, got[3].PacketID)) // s3 received (QoS 2)

	ended, err := s.End(ctx, cid, epoch, 0)
	require.NoError(t, err)
	require.Len(t, ended.Subscriptions, 2)
	var msgs []string
	for _, m := range ended.Shared {
		msgs = append(msgs, string(m.Message[1:]))
	}
	assert.Equal(t, []string{"s2", "s4", "s6|with|bars"}, msgs)
	assert.True(t, ended.Shared[0].Expiry.Equal(expiry), "the expiry goes with the message: %s", ended.Shared[0].Expiry)
	assert.True(t, ended.Shared[1].Expiry.IsZero())
	n, err := raw.Exists(ctx, sessionKey(cid), subsKey(cid), relKey(cid)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the session is gone")

	// Its shared messages stay in Redis until they are handed back:
	// listed for the dispatchers' expiry sweep, which finds them there.
	assert.True(t, ended.Kept)
	for _, k := range []string{queueKey(cid), inflightKey(cid)} {
		ttl, err := raw.PTTL(ctx, k).Result()
		require.NoError(t, err)
		assert.Greater(t, ttl, SharedHold-time.Minute, "%s outlives the session", k)
		assert.LessOrEqual(t, ttl, SharedHold)
	}
	at, err := raw.ZScore(ctx, expiringKey, cid).Result()
	require.NoError(t, err, "listed for the expiry sweep")
	assert.LessOrEqual(t, at, float64(time.Now().UnixMilli()), "due at once")
	left, err := s.ExpiredShared(ctx, cid)
	require.NoError(t, err)
	assert.Equal(t, ended.Shared, left, "the sweep would hand back what the end returned")
	require.NoError(t, s.DiscardExpired(ctx, cid))
	n, err = raw.Exists(ctx, sessionKeys(cid)...).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "handed back, nothing is left")

	// A session without a shared subscription hands back nothing, whatever
	// its queue holds (the scan is skipped), and neither does one that
	// only disconnects.
	for _, expirySeconds := range []uint32{0, 60} {
		cid := clientID(t, fmt.Sprintf("plain-%d", expirySeconds))
		epoch := connect(t, s, cid, "n1")
		if expirySeconds != 0 {
			_, err := s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Group: "g", Filter: "a"}}})
			require.NoError(t, err)
		}
		_, err := s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: shared("x")}})
		require.NoError(t, err)
		ended, err := s.End(ctx, cid, epoch, expirySeconds)
		require.NoError(t, err)
		assert.Empty(t, ended.Shared)
		assert.False(t, ended.Kept)
		if expirySeconds == 0 {
			n, err := raw.Exists(ctx, sessionKeys(cid)...).Result()
			require.NoError(t, err)
			assert.Zero(t, n, "nothing is kept of a session without shared messages")
		}
	}
}

// TestACleanStartHandsThePreviousSessionsSharedMessagesBackBeforeDiscardingThem:
// a member of a shared subscription that connects again with Clean Start
// ends its previous session; what that session held through the shared
// subscription is handed back (after the tombstones) while it is still in
// Redis, so a crash in between repeats it and never loses it. A failed
// hand-back fails the Connect with nothing discarded.
func TestACleanStartHandsThePreviousSessionsSharedMessagesBackBeforeDiscardingThem(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "member")
	epoch := connect(t, s, cid, "n1")
	_, err := s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Group: "g", Filter: "jobs/#"}, QoS: 1}})
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("\x02s0")}, {ClientID: cid, Message: []byte("\x01own")}, {ClientID: cid, Message: []byte("\x02s1")}})
	require.NoError(t, err)

	boom := errors.New("kafka unreachable")
	var calls []string
	req := ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5,
		Tombstone: func(context.Context, []Subscription) error { calls = append(calls, "tombstone"); return nil },
		HandBack:  func(context.Context, []SharedMessage) error { calls = append(calls, "handback"); return boom }}
	_, err = s.Connect(ctx, req)
	require.ErrorIs(t, err, boom)
	n, err := raw.LLen(ctx, queueKey(cid)).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(3), n, "nothing discarded while the hand-back failed")

	var handed []string
	req.HandBack = func(_ context.Context, shared []SharedMessage) error {
		calls = append(calls, "handback")
		n, err := raw.LLen(ctx, queueKey(cid)).Result()
		require.NoError(t, err)
		assert.Equal(t, int64(3), n, "handed back before they are discarded")
		for _, m := range shared {
			handed = append(handed, string(m.Message[1:]))
		}
		return nil
	}
	res, err := s.Connect(ctx, req)
	require.NoError(t, err)
	assert.False(t, res.SessionPresent)
	assert.Equal(t, []string{"s0", "s1"}, handed)
	assert.Equal(t, []string{"tombstone", "handback", "tombstone", "handback"}, calls, "tombstones first, each time")
	n, err = raw.LLen(ctx, queueKey(cid)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the clean start discarded the previous queue")
}

// TestACleanStartHandsBackWhatWasQueuedForThePreviousSessionWhileItHandedBack:
// a dispatcher that routes to the previous session while the clean start
// hands its shared messages back (its tombstones are not read yet) queues
// more: the clean start's next run finds them and hands them back too,
// only them, before it discards the session.
func TestACleanStartHandsBackWhatWasQueuedForThePreviousSessionWhileItHandedBack(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid, _ := sharedMember(t, s)

	var handed [][]string
	req := ConnectRequest{ClientID: cid, Node: "n2", CleanStart: true, Protocol: 5,
		Tombstone: func(context.Context, []Subscription) error { return nil },
		HandBack: func(_ context.Context, shared []SharedMessage) error {
			var round []string
			for _, m := range shared {
				round = append(round, string(m.Message[1:]))
			}
			handed = append(handed, round)
			if len(handed) == 1 {
				// Meanwhile a dispatcher routes two more to the
				// previous session.
				_, err := s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("\x02s1")}, {ClientID: cid, Message: []byte("\x02s2")}})
				require.NoError(t, err)
			}
			return nil
		}}
	res, err := s.Connect(ctx, req)
	require.NoError(t, err)
	assert.False(t, res.SessionPresent)
	assert.Equal(t, [][]string{{"s0"}, {"s1", "s2"}}, handed, "each message handed back once")
	n, err := raw.Exists(ctx, queueKey(cid), subsKey(cid)).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the clean start discarded the previous session")
}

// TestAnExpiredSharedMembersMessagesOutliveItsSessionForTheExpirySweep: a
// session that held a shared subscription keeps its queue and inflight
// hash SharedHold past its expiry, also when messages are queued while it
// is away; once the session expired, ExpiredShared returns what came
// through the shared subscription and DiscardExpired deletes the rest. A
// session without one expires whole, as before.
func TestAnExpiredSharedMembersMessagesOutliveItsSessionForTheExpirySweep(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	member, plain := clientID(t, "member"), clientID(t, "plain")
	for _, cid := range []string{member, plain} {
		epoch := connect(t, s, cid, "n1")
		sub := Subscription{FilterKey: FilterKey{Filter: "jobs/#"}, QoS: 1}
		if cid == member {
			sub.Group = "g"
		}
		_, err := s.Subscribe(ctx, cid, epoch, []Subscription{sub})
		require.NoError(t, err)
		_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("\x02s0")}})
		require.NoError(t, err)
		_, err = s.Take(ctx, cid, epoch, 1) // s0 in flight
		require.NoError(t, err)
		require.NoError(t, s.Disconnect(ctx, cid, epoch, 1))
		// Queued while the session is away.
		_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("\x02s1")}, {ClientID: cid, Message: []byte("\x01own")}})
		require.NoError(t, err)
	}
	for _, k := range []string{queueKey(member), inflightKey(member)} {
		ttl, err := raw.TTL(ctx, k).Result()
		require.NoError(t, err)
		assert.Greater(t, ttl, SharedHold-time.Minute, "%s outlives the session", k)
	}
	ttl, err := raw.TTL(ctx, queueKey(plain)).Result()
	require.NoError(t, err)
	assert.LessOrEqual(t, ttl, time.Second, "without a shared subscription the queue expires with the session")

	require.Eventually(t, func() bool {
		n, err := raw.Exists(ctx, sessionKey(member)).Result()
		return err == nil && n == 0
	}, 5*time.Second, 50*time.Millisecond, "the session expires")
	shared, err := s.ExpiredShared(ctx, member)
	require.NoError(t, err)
	var msgs []string
	for _, m := range shared {
		msgs = append(msgs, string(m.Message[1:]))
	}
	assert.Equal(t, []string{"s0", "s1"}, msgs, "in flight first, then the queue; not the session's own")
	require.NoError(t, s.DiscardExpired(ctx, member))
	n, err := raw.Exists(ctx, queueKey(member), inflightKey(member)).Result()
	require.NoError(t, err)
	assert.Zero(t, n)

	// A client that has a session again keeps everything.
	connect(t, s, member, "n1")
	_, err = s.Enqueue(ctx, []Delivery{{ClientID: member, Message: []byte("\x02new")}})
	require.NoError(t, err)
	shared, err = s.ExpiredShared(ctx, member)
	require.NoError(t, err)
	assert.Empty(t, shared)
	require.NoError(t, s.DiscardExpired(ctx, member))
	n, err = raw.LLen(ctx, queueKey(member)).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
}

// TestANewSessionHandsBackWhatAnExpiredSharedMemberLeft: a client whose
// shared member session expired connects again before the expiry sweep
// came: the new session takes nothing of the old one, and the shared
// messages it left go back for another member first.
func TestANewSessionHandsBackWhatAnExpiredSharedMemberLeft(t *testing.T) {
	s, raw := newTestStore(t, nil)
	ctx := testCtx(t)
	cid, epoch := sharedMember(t, s)
	require.NoError(t, s.Disconnect(ctx, cid, epoch, 1))
	require.Eventually(t, func() bool {
		n, err := raw.Exists(ctx, sessionKey(cid)).Result()
		return err == nil && n == 0
	}, 5*time.Second, 50*time.Millisecond, "the session expires")

	var handed []string
	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n2", Protocol: 5, ExpirySeconds: 60,
		Tombstone: func(context.Context, []Subscription) error { t.Error("no subscriptions to tombstone"); return nil },
		HandBack: func(_ context.Context, shared []SharedMessage) error {
			for _, m := range shared {
				handed = append(handed, string(m.Message))
			}
			return nil
		}})
	require.NoError(t, err)
	assert.False(t, res.SessionPresent)
	assert.False(t, res.Queued, "the new session holds nothing of the old one")
	assert.Equal(t, []string{"\x02s0"}, handed)
	n, err := raw.Exists(ctx, queueKey(cid), inflightKey(cid)).Result()
	require.NoError(t, err)
	assert.Zero(t, n)
}

// sharedMember connects a session (node n1) with a shared subscription
// (group g, jobs/#) and a queue of "\x02s0" (through the shared
// subscription: handoff's shared version) and "\x01own" (not).
func sharedMember(t *testing.T, s *Store) (cid string, epoch uint64) {
	t.Helper()
	ctx := testCtx(t)
	cid = clientID(t, "member")
	epoch = connect(t, s, cid, "n1")
	_, err := s.Subscribe(ctx, cid, epoch, []Subscription{{FilterKey: FilterKey{Group: "g", Filter: "jobs/#"}, QoS: 1}})
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, []Delivery{{ClientID: cid, Message: []byte("\x02s0")}, {ClientID: cid, Message: []byte("\x01own")}})
	require.NoError(t, err)
	return cid, epoch
}

// pipelineCounter counts the round trips a client makes: pipelines and
// single commands.
type pipelineCounter struct{ n atomic.Int64 }

func (p *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		p.n.Add(1)
		return next(ctx, cmd)
	}
}
func (p *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestADisconnectRecordsItsExpiryInTheScriptsPipeline: the expiry index
// entry of a session that expires goes with the disconnect script, in one
// round trip (a crash cannot come between them), then the node index's:
// two round trips in all (three before).
func TestADisconnectRecordsItsExpiryInTheScriptsPipeline(t *testing.T) {
	testRedis.Require(t)
	cfg := testConfig()
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	counter := &pipelineCounter{}
	rdb.AddHook(counter)
	s := New(rdb, cfg)
	raw := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = raw.Close() })
	ctx := testCtx(t)

	// A first disconnect loads the script (a NOSCRIPT retry is a
	// pipeline of its own).
	warm := clientID(t, "warm")
	require.NoError(t, s.Disconnect(ctx, warm, connect(t, s, warm, "n1"), 60))
	cid := clientID(t, "c")
	epoch := connect(t, s, cid, "n1")
	before := counter.n.Load()
	start := time.Now()
	require.NoError(t, s.Disconnect(ctx, cid, epoch, 60))
	assert.Equal(t, int64(2), counter.n.Load()-before, "the script with the expiry index, then the node index")
	score, err := raw.ZScore(ctx, expiringKey, cid).Result()
	require.NoError(t, err)
	at := time.UnixMilli(int64(score))
	assert.WithinDuration(t, start.Add(60*time.Second), at, 5*time.Second)
}

// TestAnEndWithoutAWillIsOneRoundTrip: a session without a will leaves its
// node's index in the round trip of its script, whether the end keeps it
// (with its expiry entry) or ends it.
func TestAnEndWithoutAWillIsOneRoundTrip(t *testing.T) {
	testRedis.Require(t)
	cfg := testConfig()
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	counter := &pipelineCounter{}
	rdb.AddHook(counter)
	s := New(rdb, cfg)
	ctx := testCtx(t)
	node := clientID(t, "node")
	warm := clientID(t, "warm")
	_, err := s.EndWithoutWill(ctx, node, warm, connect(t, s, warm, node), 60) // loads the script
	require.NoError(t, err)

	for _, expiry := range []uint32{60, 0} {
		cid := clientID(t, fmt.Sprintf("c%d", expiry))
		epoch := connect(t, s, cid, node)
		owned, err := s.SessionsOwnedBy(ctx, node)
		require.NoError(t, err)
		require.Contains(t, ownedIDs(owned), cid)
		before := counter.n.Load()
		_, err = s.EndWithoutWill(ctx, node, cid, epoch, expiry)
		require.NoError(t, err)
		assert.Equal(t, int64(1), counter.n.Load()-before, "expiry %d: one round trip", expiry)
		in, err := rdb.SIsMember(ctx, nodeSessionsKey(node), cid).Result()
		require.NoError(t, err)
		assert.False(t, in, "expiry %d: out of the node's index", expiry)
	}
}

func ownedIDs(owned []OwnedSession) []string {
	ids := make([]string, len(owned))
	for i, o := range owned {
		ids[i] = o.ClientID
	}
	return ids
}
