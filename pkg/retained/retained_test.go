package retained

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// msg is a retained message on name whose bytes are "msg:" + name + tag.
func msg(name, tag string) Message {
	return Message{Topic: name, Message: []byte("msg:" + name + tag)}
}

func topics(ms []Message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Topic)
	}
	return out
}

func TestMatchFindsTheRetainedMessagesAFilterMatches(t *testing.T) {
	s, _ := newTestStore(t)
	names := []string{"a", "a/b", "a/b/c", "a/c", "a//b", "b", "/lead", "sport", "sport/x", "sports",
		"$SYS", "$SYS/x", "$other/a", "a[b]/c", `a\b/c`, "a*/c", "ab/c"}
	var ups []Update
	for i, n := range names {
		ups = append(ups, Update{Message: msg(n, ""), Version: Version{TimeMs: int64(1000 + i)}})
	}
	applied, err := s.ApplyAll(testCtx(t), ups)
	require.NoError(t, err)
	for i, a := range applied {
		assert.True(t, a, "update of %s applied", names[i])
	}

	for _, tc := range []struct {
		name   string
		filter string
		want   []string
	}{
		{"a filter without wildcards finds its own topic", "a/b", []string{"a/b"}},
		{"a filter without wildcards finds nothing for a topic without a retained message", "a/x", []string{}},
		{"a single-level wildcard matches exactly one level", "a/+", []string{"a/b", "a/c"}},
		{"a single-level wildcard matches an empty level", "a/+/b", []string{"a//b"}},
		{"a multi-level wildcard matches its parent and every level below it", "a/#", []string{"a", "a//b", "a/b", "a/b/c", "a/c"}},
		{"the parent of a multi-level wildcard is a whole level", "sport/#", []string{"sport", "sport/x"}},
		{"a filter of only # matches every topic not beginning with $", "#",
			[]string{"/lead", "a", "a*/c", "a//b", "a/b", "a/b/c", "a/c", "a[b]/c", `a\b/c`, "ab/c", "b", "sport", "sport/x", "sports"}},
		{"a leading single-level wildcard does not match $ topics", "+/x", []string{"sport/x"}},
		{"a leading single-level wildcard matches one-level topics", "+", []string{"a", "b", "sport", "sports"}},
		{"a filter beginning with $ matches $ topics", "$SYS/#", []string{"$SYS", "$SYS/x"}},
		{"a $ topic is found by a wildcard after its first level", "$other/+", []string{"$other/a"}},
		{"glob characters in the literal prefix are taken literally", "a[b]/+", []string{"a[b]/c"}},
		{"a backslash in the literal prefix is taken literally", `a\b/+`, []string{`a\b/c`}},
		{"a star in the literal prefix is taken literally", "a*/+", []string{"a*/c"}},
		{"a wildcard filter matching nothing finds nothing", "x/#", []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Match(testCtx(t), tc.filter)
			require.NoError(t, err)
			assert.Equal(t, tc.want, topics(got))
			for _, m := range got {
				assert.Equal(t, "msg:"+m.Topic, string(m.Message))
				assert.True(t, m.Expiry.IsZero())
			}
		})
	}
}

func TestMatchReturnsTheMessageAsApplied(t *testing.T) {
	s, _ := newTestStore(t)
	expiry := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	payload := []byte("bin\x00ary|with|bars\xff")
	require.NoError(t, s.Apply(testCtx(t), Message{Topic: "dev/1/state", Message: payload, Expiry: expiry},
		Version{TimeMs: 5, ID: "id|with|bars"}, false))

	for _, filter := range []string{"dev/1/state", "dev/+/state", "#"} {
		got, err := s.Match(testCtx(t), filter)
		require.NoError(t, err)
		require.Len(t, got, 1, filter)
		assert.Equal(t, "dev/1/state", got[0].Topic)
		assert.Equal(t, payload, got[0].Message)
		assert.True(t, expiry.Equal(got[0].Expiry), "expiry %v, want %v", got[0].Expiry, expiry)
	}
}

func TestApplyOrdersTheUpdatesOfATopicByVersion(t *testing.T) {
	type step struct {
		v       Version
		tag     string // the message's tag; "" removes
		applied bool
	}
	v := func(ms int64, id string) Version { return Version{TimeMs: ms, ID: id} }
	for _, tc := range []struct {
		name  string
		steps []step
		want  string // the tag of the message left, "" for none
	}{
		{"a newer message replaces an older one",
			[]step{{v(1, "a"), "1", true}, {v(2, "a"), "2", true}}, "2"},
		{"an older message arriving after a newer one is ignored",
			[]step{{v(2, "a"), "2", true}, {v(1, "a"), "1", false}}, "2"},
		{"an empty payload deletes the retained message",
			[]step{{v(1, "a"), "1", true}, {v(2, "a"), "", true}}, ""},
		{"an older message arriving after a delete is ignored",
			[]step{{v(1, "a"), "1", true}, {v(3, "a"), "", true}, {v(2, "a"), "2", false}}, ""},
		{"a delete arriving before any message still stops older messages",
			[]step{{v(3, "a"), "", true}, {v(2, "a"), "2", false}}, ""},
		{"a newer message after a delete is stored",
			[]step{{v(1, "a"), "1", true}, {v(2, "a"), "", true}, {v(3, "a"), "3", true}}, "3"},
		{"an older delete arriving after a newer message is ignored",
			[]step{{v(2, "a"), "2", true}, {v(1, "a"), "", false}}, "2"},
		{"the message id breaks a tie of timestamps",
			[]step{{v(5, "b"), "b", true}, {v(5, "a"), "a", false}, {v(5, "c"), "c", true}}, "c"},
		{"ids compare byte by byte",
			[]step{{v(5, "a|b"), "1", true}, {v(5, "a|"), "2", false}, {v(5, "a\xff"), "3", true}}, "3"},
		{"an empty id is the lowest",
			[]step{{v(5, "a"), "a", true}, {v(5, ""), "none", false}}, "a"},
		{"the same update applied again is applied again",
			[]step{{v(5, "a"), "x", true}, {v(5, "a"), "x", true}}, "x"},
		{"negative timestamps order too",
			[]step{{v(-1, ""), "1", true}, {v(-2, ""), "2", false}}, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t)
			for i, st := range tc.steps {
				applied, err := s.ApplyAll(testCtx(t), []Update{{Message: msg("t", st.tag), Version: st.v, Remove: st.tag == ""}})
				require.NoError(t, err)
				assert.Equal(t, []bool{st.applied}, applied, "step %d applied", i)
			}
			for _, filter := range []string{"t", "#"} {
				got, err := s.Match(testCtx(t), filter)
				require.NoError(t, err)
				if tc.want == "" {
					assert.Empty(t, got, filter)
					continue
				}
				require.Len(t, got, 1, filter)
				assert.Equal(t, "msg:t"+tc.want, string(got[0].Message), filter)
			}
		})
	}
}

func TestApplyAllOrdersUpdatesWithinOnePipeline(t *testing.T) {
	s, _ := newTestStore(t)
	applied, err := s.ApplyAll(testCtx(t), []Update{
		{Message: msg("t", "3"), Version: Version{TimeMs: 3}},
		{Message: msg("t", "1"), Version: Version{TimeMs: 1}},
		{Message: msg("u", ""), Version: Version{TimeMs: 2}, Remove: true},
		{Message: msg("u", "1"), Version: Version{TimeMs: 1}},
	})
	require.NoError(t, err)
	assert.Equal(t, []bool{true, false, true, false}, applied)
	got, err := s.Match(testCtx(t), "#")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "msg:t3", string(got[0].Message))
}

func TestApplyRefusesAMessageWithoutTopic(t *testing.T) {
	s, rdb := newTestStore(t)
	_, err := s.ApplyAll(testCtx(t), []Update{{Message: msg("a", "")}, {Message: Message{}}})
	require.ErrorIs(t, err, ErrEmptyTopic)
	n, err := Count(testCtx(t), rdb)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing of the batch is applied")
}

func TestExpiredMessagesAreNotMatchedAndBecomeTombstones(t *testing.T) {
	s, rdb := newTestStore(t)
	now := time.Now()
	s.now = func() time.Time { return now }
	ctx := testCtx(t)
	require.NoError(t, s.Apply(ctx, Message{Topic: "gone", Message: []byte("x"), Expiry: now.Add(-time.Millisecond)}, Version{TimeMs: 10}, false))
	require.NoError(t, s.Apply(ctx, Message{Topic: "soon", Message: []byte("x"), Expiry: now.Add(time.Minute)}, Version{TimeMs: 10}, false))
	require.NoError(t, s.Apply(ctx, Message{Topic: "never", Message: []byte("x")}, Version{TimeMs: 10}, false))

	got, err := s.Match(ctx, "gone")
	require.NoError(t, err)
	assert.Empty(t, got, "an expired message is not sent [MQTT-3.3.2-5]")
	got, err = s.Match(ctx, "#")
	require.NoError(t, err)
	assert.Equal(t, []string{"never", "soon"}, topics(got))

	v, err := rdb.HGet(ctx, KeyOf("gone"), "gone").Result()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v, "t|10|"), "the expired message became a tombstone with its version: %q", v)

	now = now.Add(time.Minute)
	got, err = s.Match(ctx, "+")
	require.NoError(t, err)
	assert.Equal(t, []string{"never"}, topics(got), "a message is gone at its expiry")
	v, err = rdb.HGet(ctx, KeyOf("soon"), "soon").Result()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v, "t|10|"), "the wildcard match turned it into a tombstone: %q", v)

	applied, err := s.ApplyAll(ctx, []Update{{Message: Message{Topic: "soon", Message: []byte("older")}, Version: Version{TimeMs: 9}}})
	require.NoError(t, err)
	assert.Equal(t, []bool{false}, applied, "a message older than the expired one stays replaced")
	got, err = s.Match(ctx, "soon")
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestTombstonesArePurgedAfterTheirTTL(t *testing.T) {
	s, rdb := newTestStore(t)
	now := time.Now()
	s.now = func() time.Time { return now }
	ctx := testCtx(t)
	for _, n := range []string{"a/1", "a/2"} {
		require.NoError(t, s.Apply(ctx, msg(n, ""), Version{TimeMs: 1}, false))
		require.NoError(t, s.Apply(ctx, msg(n, ""), Version{TimeMs: 2}, true))
	}
	got, err := s.Match(ctx, "a/#")
	require.NoError(t, err)
	assert.Empty(t, got)
	n, err := Count(ctx, rdb)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n, "the tombstones are kept")

	now = now.Add(TombstoneTTL)
	_, err = s.Match(ctx, "a/1")
	require.NoError(t, err)
	ok, err := rdb.HExists(ctx, KeyOf("a/1"), "a/1").Result()
	require.NoError(t, err)
	assert.False(t, ok, "an exact match purged the tombstone")
	_, err = s.Match(ctx, "a/+")
	require.NoError(t, err)
	n, err = Count(ctx, rdb)
	require.NoError(t, err)
	assert.Zero(t, n, "a wildcard match purged the tombstone")
}

func TestMatchSkipsMalformedEntriesAndApplyReplacesThem(t *testing.T) {
	s, rdb := newTestStore(t)
	ctx := testCtx(t)
	for _, bad := range []string{"", "x", "m|", "m|1|2|", "m|1|2|9|short", "q|1|0|0|"} {
		require.NoError(t, rdb.HSet(ctx, KeyOf("bad"), "bad", bad).Err())
		require.NoError(t, s.Apply(ctx, msg("good", ""), Version{TimeMs: 1}, false))
		got, err := s.Match(ctx, "#")
		require.NoError(t, err, "%q", bad)
		assert.Equal(t, []string{"good"}, topics(got), "%q", bad)
		got, err = s.Match(ctx, "bad")
		require.NoError(t, err, "%q", bad)
		assert.Empty(t, got, "%q", bad)

		require.NoError(t, s.Apply(ctx, msg("bad", ""), Version{TimeMs: -5}, false))
		got, err = s.Match(ctx, "bad")
		require.NoError(t, err)
		assert.Equal(t, []string{"bad"}, topics(got), "a malformed entry is replaced by any version (%q)", bad)
	}
}

func TestApplyRecoversFromAnEmptyScriptCache(t *testing.T) {
	s, rdb := newTestStore(t)
	ctx := testCtx(t)
	require.NoError(t, s.Apply(ctx, msg("a", "1"), Version{TimeMs: 1}, false))
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	require.NoError(t, s.Apply(ctx, msg("a", "2"), Version{TimeMs: 2}, false))
	got, err := s.Match(ctx, "a")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "msg:a2", string(got[0].Message))
}

func TestMatchScansAHashLargerThanOneScanStep(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := testCtx(t)
	var ups []Update
	for i := range 3000 {
		ups = append(ups, Update{Message: msg(fmt.Sprintf("fleet/%04d/state", i), ""), Version: Version{TimeMs: 1}})
		ups = append(ups, Update{Message: msg(fmt.Sprintf("other/%04d", i), ""), Version: Version{TimeMs: 1}})
	}
	applied, err := s.ApplyAll(ctx, ups)
	require.NoError(t, err)
	assert.NotContains(t, applied, false)

	got, err := s.Match(ctx, "fleet/+/state")
	require.NoError(t, err)
	require.Len(t, got, 3000)
	for i, m := range got {
		assert.Equal(t, fmt.Sprintf("fleet/%04d/state", i), m.Topic)
	}
	got, err = s.Match(ctx, "#")
	require.NoError(t, err)
	assert.Len(t, got, 6000)
}

func TestTheStoreWorksOnARedisCluster(t *testing.T) {
	testRedis.Require(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{testRedis.ClusterAddr}})
	t.Cleanup(func() { _ = rdb.Close() })
	s := New(rdb, newDiscardLogger())
	ctx := testCtx(t)
	clearStore(t, rdb)
	require.NoError(t, s.Apply(ctx, msg("c/1", ""), Version{TimeMs: 1}, false))
	require.NoError(t, s.Apply(ctx, msg("c/2", ""), Version{TimeMs: 1}, false))
	require.NoError(t, s.Apply(ctx, msg("c/2", ""), Version{TimeMs: 2}, true))
	got, err := s.Match(ctx, "c/+")
	require.NoError(t, err)
	assert.Equal(t, []string{"c/1"}, topics(got))
}

func TestEntriesRoundTrip(t *testing.T) {
	for _, e := range []entry{
		{kind: kindMessage, version: Version{TimeMs: 1767322245000, ID: "0195f0c2-7d4e-7b3a-9d2c-1f2e3d4c5b6a"}, message: []byte("m")},
		{kind: kindMessage, version: Version{TimeMs: -3, ID: "|||"}, at: time.UnixMilli(1767322245123), message: []byte("|1|2|")},
		{kind: kindTombstone, version: Version{TimeMs: 0}, at: time.UnixMilli(99)},
	} {
		got, err := decodeEntry(e.encode())
		require.NoError(t, err)
		assert.Equal(t, e.kind, got.kind)
		assert.Equal(t, e.version, got.version)
		assert.True(t, e.at.Equal(got.at))
		assert.Equal(t, e.message, got.message)
	}
}

func TestEachStreamsTheMatchesAPageAtATimeAndStopsWhenAsked(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := testCtx(t)
	var ups []Update
	for i := range 5000 {
		ups = append(ups, Update{Message: msg(fmt.Sprintf("fleet/%04d/state", i), ""), Version: Version{TimeMs: 1}})
	}
	_, err := s.ApplyAll(ctx, ups)
	require.NoError(t, err)

	seen := map[string]bool{}
	pages, biggest := 0, 0
	require.NoError(t, s.Each(ctx, "fleet/#", func(page []Message) bool {
		pages++
		biggest = max(biggest, len(page))
		for _, m := range page {
			require.False(t, seen[m.Topic], "%s twice", m.Topic)
			seen[m.Topic] = true
		}
		return true
	}))
	assert.Len(t, seen, 5000, "every match, once")
	assert.Greater(t, pages, 1)
	assert.Less(t, biggest, 5000, "never every match at once: pages of one scan step")

	calls := 0
	require.NoError(t, s.Each(ctx, "fleet/#", func([]Message) bool { calls++; return false }))
	assert.Equal(t, 1, calls, "false stops the scan")
}

func TestQuotaConfigNamesTheBadField(t *testing.T) {
	var c QuotaConfig
	c.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	require.NoError(t, c.Validate(), "the defaults are valid")
	c.MaxMessages = -1
	require.ErrorContains(t, c.Validate(), "retained.max-messages")
	c.MaxMessages, c.MaxMessageBytes = 0, -1
	require.ErrorContains(t, c.Validate(), "retained.max-message-bytes")
}
