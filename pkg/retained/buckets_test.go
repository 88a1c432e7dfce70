package retained

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestATopicsBucketIsChosenByItsFirstTwoLevels(t *testing.T) {
	for _, tc := range []struct{ topic, prefix string }{
		{"devices/d-1/status", "devices/d-1"},
		{"devices/d-1/cmd/reboot", "devices/d-1"},
		{"devices/d-1", "devices/d-1"},
		{"status", "status"},
		{"a//c", "a/"},
		{"/x/y", "/x"},
	} {
		assert.Equal(t, tc.prefix, pinPrefix(tc.topic), tc.topic)
		assert.Equal(t, KeyOf(tc.prefix), KeyOf(tc.topic), tc.topic)
	}
	for _, tc := range []struct {
		filter string
		pinned string // "" when every bucket is scanned
	}{
		{"devices/d-1/cmd/#", "devices/d-1"},
		{"devices/d-1/#", "devices/d-1"},
		{"devices/d-1/+", "devices/d-1"},
		{"devices/d-1/+/state", "devices/d-1"},
		{"devices/+/status", ""},
		{"devices/#", ""},
		{"devices/+", ""},
		{"+/d-1/status", ""},
		{"#", ""},
		{"a//#", "a/"},
	} {
		b, ok := pinnedBucket(tc.filter)
		if tc.pinned == "" {
			assert.False(t, ok, tc.filter)
			continue
		}
		require.True(t, ok, tc.filter)
		assert.Equal(t, bucketOf(tc.pinned), b, tc.filter)
	}
}

func TestTheStoreSpreadsOverItsBucketsAndKeepsADevicesTopicsTogether(t *testing.T) {
	s, rdb := newTestStore(t)
	ctx := testCtx(t)
	fillDevices(t, s, 5000, "status", "cmd/reboot")
	n, err := Count(ctx, rdb)
	require.NoError(t, err)
	assert.Equal(t, int64(10000), n)
	used := 0
	for b := range Buckets {
		l, err := rdb.HLen(ctx, BucketKey(b)).Result()
		require.NoError(t, err)
		if l > 0 {
			used++
		}
		assert.LessOrEqual(t, l, int64(60), "bucket %d holds %d of 10,000 (10 expected)", b, l)
	}
	assert.Greater(t, used, Buckets*9/10, "5,000 devices use most of the %d buckets", Buckets)
	// A device's topics share a hash, the one its own filters read.
	for _, d := range []string{"devices/d-0", "devices/d-4999"} {
		for _, name := range []string{d + "/status", d + "/cmd/reboot"} {
			ok, err := rdb.HExists(ctx, KeyOf(d), name).Result()
			require.NoError(t, err)
			assert.True(t, ok, name)
		}
	}
	exists, err := rdb.Exists(ctx, LegacyKey).Result()
	require.NoError(t, err)
	assert.Zero(t, exists, "nothing is written to the legacy hash")
}

// hscans returns the HSCAN calls the test server has served.
func hscans(t *testing.T, rdb *redis.Client) int { return commandCalls(t, rdb, "hscan") }

func TestADevicesOwnWildcardReadsOneBucketAndAWideOneReadsThemAll(t *testing.T) {
	s, rdb := newTestStore(t)
	ctx := testCtx(t)
	fillDevices(t, s, 3000, "status", "cmd/reboot")

	knowLegacy(t, s)
	before := hscans(t, rdb)
	got, err := s.Match(ctx, "devices/d-7/cmd/#")
	require.NoError(t, err)
	assert.Equal(t, []string{"devices/d-7/cmd/reboot"}, topics(got))
	// One HSCAN of the device's bucket (a few entries: returned whole).
	assert.Equal(t, 1, hscans(t, rdb)-before, "HSCAN calls for a device's own filter")

	used := 0
	for b := range Buckets {
		if n, err := rdb.HLen(ctx, BucketKey(b)).Result(); err == nil && n > 0 {
			used++
		}
	}
	before = hscans(t, rdb)
	got, err = s.Match(ctx, "devices/+/status")
	require.NoError(t, err)
	require.Len(t, got, 3000)
	assert.Equal(t, "devices/d-0/status", got[0].Topic)
	assert.Equal(t, used, hscans(t, rdb)-before, "a filter with a wildcard in its first two levels reads every bucket that holds something")

	// Over a store of a few topics, only their buckets.
	clearStore(t, rdb)
	fillDevices(t, s, 3, "status")
	before = hscans(t, rdb)
	got, err = s.Match(ctx, "#")
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.LessOrEqual(t, hscans(t, rdb)-before, 3, "HSCANs of # over three topics")
}

// knowLegacy waits until s checked whether the legacy hash exists.
func knowLegacy(t *testing.T, s *Store) {
	t.Helper()
	require.Eventually(t, func() bool { s.readLegacy(); return s.legacy.at.Load() != 0 }, 5*time.Second, 5*time.Millisecond)
}

// commandCalls returns how often the test server ran cmd.
func commandCalls(t *testing.T, rdb *redis.Client, cmd string) int {
	t.Helper()
	info, err := rdb.Info(testCtx(t), "commandstats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

func TestReadersSkipTheLegacyHashOnceItIsGoneAndSeeItIfItComesBack(t *testing.T) {
	s, rdb := newTestStore(t)
	s.legacy.recheck = 50 * time.Millisecond
	ctx := testCtx(t)
	require.NoError(t, s.Apply(ctx, msg("devices/d-1/status", "new"), Version{TimeMs: 1}, false))
	knowLegacy(t, s)
	require.Eventually(t, func() bool { return !s.readLegacy() }, 5*time.Second, 5*time.Millisecond, "the legacy hash is known gone")

	before := commandCalls(t, rdb, "hget")
	got, err := s.Match(ctx, "devices/d-1/status")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, 1, commandCalls(t, rdb, "hget")-before, "an exact lookup reads only the bucket")

	// A dispatcher of an older build writes the legacy hash again (a
	// rolling upgrade): readers see its entries within the recheck.
	legacyEntry(t, rdb, "devices/d-2/status", "legacy", 1)
	require.Eventually(t, func() bool {
		got, err := s.Match(ctx, "devices/+/status")
		return err == nil && len(got) == 2
	}, 5*time.Second, 10*time.Millisecond, "the legacy hash was not read again")
	got, err = s.Match(ctx, "devices/d-2/status")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "legacy", string(got[0].Message))
}

// legacyEntry writes name's entry into the legacy hash, as builds before
// the buckets stored it.
func legacyEntry(t *testing.T, rdb redis.UniversalClient, name, payload string, version int64) {
	t.Helper()
	e := entry{kind: kindMessage, version: Version{TimeMs: version, ID: "id-" + name}, message: []byte(payload)}
	require.NoError(t, rdb.HSet(testCtx(t), LegacyKey, name, e.encode()).Err())
}

func TestTheLegacyHashIsReadUntilMigrateMovesItIntoTheBuckets(t *testing.T) {
	s, rdb := newTestStore(t)
	ctx := testCtx(t)
	for i := range 2500 {
		legacyEntry(t, rdb, fmt.Sprintf("old/%04d/state", i), "legacy", 5)
	}
	// A topic updated since by a new build: the bucket's is newer.
	legacyEntry(t, rdb, "old/0001/state", "legacy", 5)
	require.NoError(t, s.Apply(ctx, Message{Topic: "old/0001/state", Message: []byte("newer")}, Version{TimeMs: 6, ID: "x"}, false))
	// A topic whose legacy entry is newer than its bucket's (an older
	// build's dispatcher wrote it during a rolling upgrade).
	require.NoError(t, s.Apply(ctx, Message{Topic: "old/0002/state", Message: []byte("older")}, Version{TimeMs: 4, ID: "x"}, false))
	// One that does not decode stays where it is.
	require.NoError(t, rdb.HSet(ctx, LegacyKey, "old/bad", "q|1|0|0|").Err())

	check := func(when string) {
		t.Helper()
		got, err := s.Match(ctx, "old/+/state")
		require.NoError(t, err, when)
		require.Len(t, got, 2500, when)
		assert.Equal(t, "newer", string(got[1].Message), "%s: the bucket's newer entry wins", when)
		one, err := s.Match(ctx, "old/0003/state")
		require.NoError(t, err, when)
		require.Len(t, one, 1, when)
		assert.Equal(t, "legacy", string(one[0].Message), when)
		one, err = s.Match(ctx, "old/0001/state")
		require.NoError(t, err, when)
		require.Len(t, one, 1, when)
		assert.Equal(t, "newer", string(one[0].Message), when)
		one, err = s.Match(ctx, "old/0002/state")
		require.NoError(t, err, when)
		require.Len(t, one, 1, when)
		assert.Equal(t, "legacy", string(one[0].Message), "%s: an exact lookup takes the newer of the two", when)
	}
	check("before the move")

	moved, err := s.Migrate(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2500, moved)
	n, err := rdb.HLen(ctx, LegacyKey).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "only the malformed entry is left")
	v, err := rdb.HGet(ctx, KeyOf("old/0001/state"), "old/0001/state").Result()
	require.NoError(t, err)
	assert.Contains(t, v, "newer", "the bucket's newer entry was kept")
	check("after the move")
	total, err := Count(ctx, rdb)
	require.NoError(t, err)
	assert.Equal(t, int64(2501), total)

	moved, err = s.Migrate(ctx)
	require.NoError(t, err)
	assert.Zero(t, moved, "a second pass has nothing to move")
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.RunMigration(runCtx, 0) // returns: nothing left to move
}

func TestTheQuotaCountsRarelyWhileFarFromALargeBound(t *testing.T) {
	_, rdb := newTestStore(t)
	for _, tc := range []struct {
		name  string
		max   int
		count int64
		want  time.Duration
	}{
		{"a large bound, the store under half of it", 1000000, 499999, countRarely},
		{"a large bound, the store at half of it", 1000000, 500000, countEvery},
		{"a small bound", 100, 0, countEvery},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewQuota(QuotaConfig{MaxMessages: tc.max}, rdb, newDiscardLogger())
			q.count.Store(tc.count)
			assert.Equal(t, tc.want, q.countInterval())
		})
	}

	// The count itself covers every bucket and the legacy hash.
	s := New(rdb, newDiscardLogger())
	fillDevices(t, s, 300, "status")
	legacyEntry(t, rdb, "old/1", "x", 1)
	q := NewQuota(QuotaConfig{MaxMessages: 301}, rdb, newDiscardLogger())
	// The first call starts a count on a goroutine of its own and passes
	// while no count is known; should the count finish before the call
	// looks (a busy machine), the call already sees the store full.
	if err := q.Allow(1); err != nil {
		require.ErrorIs(t, err, ErrRetainedFull, "the first call starts a count")
	}
	require.Eventually(t, func() bool { return q.Count() == 301 }, 5*time.Second, 10*time.Millisecond)
	assert.ErrorIs(t, q.Allow(1), ErrRetainedFull)
	assert.NoError(t, q.Allow(0), "a removal always passes")
}
