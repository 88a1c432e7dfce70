package session

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestReplicationConfirmsReplicatedWritesAndNamesAFailover runs rounds on
// a real three-master Redis Cluster with a replica each: every primary
// confirms while its replica reads; a stopped replica leaves its primary
// unconfirmed (acked 0 of 1) and the others confirmed; after the primary
// is killed and its replica promoted, the round names another set of
// primaries with another replication ID.
func TestReplicationConfirmsReplicatedWritesAndNamesAFailover(t *testing.T) {
	rc := testkit.StartReplicatedRedisCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	// Long enough for an idle replica to answer on a loaded machine.
	rep := NewReplication(cc, "test", 1, 2*time.Second)
	t.Cleanup(rep.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	masters := map[string]bool{}
	for _, m := range rc.Masters {
		masters[m.Addr] = true
	}
	before, err := rep.Round(ctx)
	require.NoError(t, err)
	require.Len(t, before, 3)
	ids := map[string]string{}
	for _, p := range before {
		assert.True(t, masters[p.Addr], "%s is not a master", p.Addr)
		assert.NoError(t, p.Err)
		assert.Equal(t, 1, p.Connected, p.Addr)
		assert.Equal(t, 1, p.Needed, p.Addr)
		assert.Equal(t, 1, p.Acked, p.Addr)
		assert.True(t, p.Confirmed(), p.Addr)
		assert.NotEmpty(t, p.ReplID)
		ids[p.Addr] = p.ReplID
	}

	victim, cut := rc.Masters[0], rc.Replicas[0]
	require.NoError(t, cut.Signal(syscall.SIGSTOP))
	short, err := rep.Round(ctx)
	require.NoError(t, err)
	require.Len(t, short, 3)
	for _, p := range short {
		if p.Addr == victim.Addr {
			assert.Equal(t, 1, p.Needed)
			assert.Equal(t, 0, p.Acked, "the stopped replica cannot have acknowledged")
			assert.False(t, p.Confirmed())
		} else {
			assert.True(t, p.Confirmed(), p.Addr)
		}
		assert.Equal(t, ids[p.Addr], p.ReplID, "no failover yet")
	}

	victim.Kill()
	require.NoError(t, cut.Signal(syscall.SIGCONT))
	// The other masters elect the replica once its master is seen failed.
	var after []Primary
	require.Eventually(t, func() bool {
		after, err = rep.Round(ctx)
		if err != nil || len(after) != 3 {
			return false
		}
		for _, p := range after {
			if p.Err != nil {
				return false
			}
		}
		return after[0].Addr == cut.Addr || after[1].Addr == cut.Addr || after[2].Addr == cut.Addr
	}, 30*time.Second, 200*time.Millisecond, "the replica of %s was never promoted (last round %+v, err %v)", victim.Addr, after, err)
	for _, p := range after {
		if p.Addr == cut.Addr {
			assert.NotEqual(t, ids[victim.Addr], p.ReplID, "a promoted replica has a replication ID of its own")
			assert.Equal(t, 0, p.Connected, "its old master is dead")
			assert.True(t, p.Confirmed(), "nothing to wait for")
		} else {
			assert.Equal(t, ids[p.Addr], p.ReplID, p.Addr)
		}
	}
}

// TestReplicationOnASingleRedisWaitsForNothing: a Redis without replicas
// (the dev stack's) confirms every round at once and names itself.
func TestReplicationOnASingleRedisWaitsForNothing(t *testing.T) {
	testRedis.Require(t)
	c := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = c.Close() })
	rep := NewReplication(c, "test", 1, time.Minute)
	t.Cleanup(rep.Close)
	start := time.Now()
	got, err := rep.Round(context.Background())
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, testRedis.Addr, got[0].Addr)
	assert.Equal(t, 0, got[0].Connected)
	assert.Equal(t, 0, got[0].Needed)
	assert.True(t, got[0].Confirmed())
	assert.Less(t, time.Since(start), 30*time.Second, "a round without replicas must not wait for WAIT's timeout")
	again, err := rep.Round(context.Background())
	require.NoError(t, err)
	assert.Equal(t, got[0].ReplID, again[0].ReplID)
}

// TestParseReplicationRefusesAReplica: a node that is not a primary is
// an error, so a round never confirms on a demoted node.
func TestParseReplicationRefusesAReplica(t *testing.T) {
	_, _, err := parseReplication("# Replication\r\nrole:slave\r\nmaster_replid:abc\r\n")
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "not a primary"), err)
	id, n, err := parseReplication("# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
		"slave0:ip=127.0.0.1,port=7001,state=online,offset=120,lag=0\r\n" +
		"slave1:ip=127.0.0.1,port=7002,state=online,offset=120,lag=1\r\nmaster_replid:abc\r\n")
	require.NoError(t, err)
	assert.Equal(t, "abc", id)
	assert.Equal(t, 2, n)
	// A replica still in its initial synchronisation holds no copy and
	// acknowledges nothing: it is not counted.
	_, n, err = parseReplication("# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
		"slave0:ip=127.0.0.1,port=7001,state=wait_bgsave,offset=0,lag=0\r\n" +
		"slave1:ip=127.0.0.1,port=7002,state=online,offset=120,lag=0\r\nmaster_replid:abc\r\n")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, _, err = parseReplication("# Replication\r\nrole:master\r\nmaster_replid:abc\r\n")
	require.Error(t, err, "no connected_slaves: not INFO replication")
}

// TestReplicationStillWaitsForAReplicaThatLeft: a replica that died still
// counts while its primary keeps its replication ID (Redis Cluster may
// promote it with what it had): rounds are short until it is back and has
// caught up; once the primary noticed the replica leave, a round no longer
// sits out WAIT's timeout.
func TestReplicationStillWaitsForAReplicaThatLeft(t *testing.T) {
	rc := testkit.StartReplicatedRedisCluster(t, 1)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	// A round that starts before the primary noticed the kill waits for
	// the dead replica until WAIT's timeout: keep it short.
	rep := NewReplication(cc, "test", 1, 500*time.Millisecond)
	t.Cleanup(rep.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	got, err := rep.Round(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.True(t, got[0].Confirmed())
	id := got[0].ReplID

	rc.Replicas[0].Kill()
	require.Eventually(t, func() bool {
		got, err = rep.Round(ctx)
		return err == nil && len(got) == 1 && got[0].Connected == 0
	}, 10*time.Second, 50*time.Millisecond, "the primary never saw its replica leave")
	assert.Equal(t, 1, got[0].Needed, "the replica that left still counts")
	assert.False(t, got[0].Confirmed())
	assert.Equal(t, id, got[0].ReplID)

	require.NoError(t, rc.Replicas[0].Restart())
	require.Eventually(t, func() bool {
		got, err = rep.Round(ctx)
		return err == nil && len(got) == 1 && got[0].Confirmed()
	}, 30*time.Second, 100*time.Millisecond, "the replica never acknowledged again: %+v", got)
	assert.Equal(t, 1, got[0].Acked)
	assert.Equal(t, id, got[0].ReplID, "the primary is the same")
}

// TestReplicationOnMiniredisConfirmsWithoutReplicationInfo: the dev
// stack's in-memory Redis refuses INFO replication; a round says so and
// confirms (nothing to wait for) instead of failing for ever.
func TestReplicationOnMiniredisConfirmsWithoutReplicationInfo(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	rep := NewReplication(c, "test", 1, time.Second)
	t.Cleanup(rep.Close)
	got, err := rep.Round(context.Background())
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.NoError(t, got[0].Err)
	assert.True(t, got[0].NoReplicationInfo)
	assert.True(t, got[0].Confirmed())
}

// TestARoundTheRedisUserMayNotRunSaysWhatToGrant: a user that may not
// write the marker fails the round with Redis's NOPERM and the rules it
// needs.
func TestARoundTheRedisUserMayNotRunSaysWhatToGrant(t *testing.T) {
	testRedis.Require(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = admin.Close() })
	user := "nomarker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~elsewhere:*", "&*", "+@all").Err())
	t.Cleanup(func() { _ = admin.Do(ctx, "ACL", "DELUSER", user).Err() })
	c := redis.NewClient(&redis.Options{Addr: testRedis.Addr, Username: user, Password: "pw"})
	t.Cleanup(func() { _ = c.Close() })
	rep := NewReplication(c, "nomarker", 1, time.Second)
	t.Cleanup(rep.Close)
	got, err := rep.Round(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Error(t, got[0].Err)
	assert.Contains(t, got[0].Err.Error(), "NOPERM")
	assert.Contains(t, got[0].Err.Error(), "docs/operations.md, Redis access")
	assert.False(t, got[0].Confirmed())
}
