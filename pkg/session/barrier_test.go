package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// waitCalls reads how many WAIT commands the server at addr has run.
func waitCalls(t *testing.T, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_wait:calls=")
		if ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

// onReplica reads key from the replica at addr (READONLY: a cluster
// replica answers reads of its primary's slots).
func onReplica(t *testing.T, addr, key string) (string, error) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
		return cn.ReadOnly(ctx).Err()
	}})
	defer c.Close()
	return c.Get(context.Background(), key).Result()
}

// TestABarrierWaitsForTheReplicaAndNamesAFailover, on a real Redis Cluster
// of three masters with a replica each: concurrent writers share rounds (fewer
// WAITs than writers) and each finds its write on the replica once its
// wait returns; a writer whose replica is stopped is not answered until
// the replica runs again; a round asks only the primaries that hold the
// writers' keys; a writer whose primary died and was replaced
// between its Mark and its round is told ErrFailover.
func TestABarrierWaitsForTheReplicaAndNamesAFailover(t *testing.T) {
	// Three masters: a failover needs a majority of masters to elect.
	rc := testkit.StartReplicatedRedisCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	rep := NewReplication(cc, "barrier-test", 1, 2*time.Second)
	t.Cleanup(rep.Close)
	// No round asks every primary again within the test (quiet).
	b := NewBarrier(rep, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	prims, err := b.Round(ctx)
	require.NoError(t, err)
	require.Len(t, prims, 3)
	for _, p := range prims {
		require.Equal(t, 1, p.Needed, p.Addr)
	}
	// The writes below all go to the master of {x}'s slot.
	owner, err := cc.MasterForKey(ctx, "{x}")
	require.NoError(t, err)
	var primary, replica *testkit.RedisNode
	for i, m := range rc.Masters {
		if m.Addr == owner.Options().Addr {
			primary, replica = m, rc.Replicas[i]
		}
	}
	require.NotNil(t, primary, "no master at %s", owner.Options().Addr)

	t.Run("writers share rounds", func(t *testing.T) {
		const writers = 40
		before := waitCalls(t, primary.Addr)
		others := map[string]int{}
		for _, m := range rc.Masters {
			if m != primary {
				others[m.Addr] = waitCalls(t, m.Addr)
			}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make([]BarrierResult, writers)
		errs := make([]error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := b.Mark()
				errs[i] = cc.Set(ctx, fmt.Sprintf("shared:{x}:%d", i), "v", 0).Err()
				<-start
				if errs[i] == nil {
					results[i], errs[i] = b.Join(m, "{x}").Wait(ctx)
				}
			}()
		}
		close(start)
		wg.Wait()
		for i := range writers {
			require.NoError(t, errs[i], i)
			assert.Equal(t, Replicated, results[i], i)
			v, err := onReplica(t, replica.Addr, fmt.Sprintf("shared:{x}:%d", i))
			require.NoError(t, err, "write %d not on the replica after its wait", i)
			assert.Equal(t, "v", v)
		}
		assert.Less(t, waitCalls(t, primary.Addr)-before, writers, "every writer ran a round of its own")
		for addr, n := range others {
			assert.Equal(t, n, waitCalls(t, addr), "a round asked %s, which holds none of the writes", addr)
		}
	})

	t.Run("a stopped replica holds the answer back", func(t *testing.T) {
		require.NoError(t, replica.Signal(syscall.SIGSTOP))
		stopped := true
		defer func() {
			if stopped {
				_ = replica.Signal(syscall.SIGCONT)
			}
		}()
		m := b.Mark()
		require.NoError(t, cc.Set(ctx, "stopped:{x}", "v", 0).Err())
		w := b.Join(m, "{x}")
		type answer struct {
			res BarrierResult
			err error
		}
		done := make(chan answer, 1)
		go func() {
			res, err := w.Wait(ctx)
			done <- answer{res, err}
		}()
		select {
		case a := <-done:
			t.Fatalf("answered while the replica was stopped: %v %v", a.res, a.err)
		case <-time.After(300 * time.Millisecond):
		}
		require.NoError(t, replica.Signal(syscall.SIGCONT))
		stopped = false
		a := <-done
		// The round that was waiting may have timed out (Short) on a slow
		// machine; a Replicated answer must mean the replica has it.
		require.NoError(t, a.err)
		if a.res == Replicated {
			v, err := onReplica(t, replica.Addr, "stopped:{x}")
			require.NoError(t, err)
			assert.Equal(t, "v", v)
		} else {
			assert.Equal(t, Short, a.res)
		}
	})

	t.Run("a failover between mark and round", func(t *testing.T) {
		m := b.Mark()
		require.NoError(t, cc.Set(ctx, "lost:{x}", "v", 0).Err())
		primary.Kill()
		// Until the replica is promoted, rounds fail; then the round names
		// the new primary, which is not the one the mark saw.
		var err error
		require.Eventually(t, func() bool {
			_, err = b.Join(m, "{x}").Wait(ctx)
			return errors.Is(err, ErrFailover)
		}, 60*time.Second, 200*time.Millisecond, "never told of the failover: %v", err)
		// A writer that marks after the failover is answered (the other
		// primaries' replicas confirm; the new primary has none).
		m = b.Mark()
		require.NoError(t, cc.Set(ctx, "after:{x}", "v", 0).Err())
		_, err = b.Join(m, "{x}").Wait(ctx)
		require.NoError(t, err)
	})
}

// TestABarrierOnASingleRedisAsksOncePerQuiet: with no replica anywhere a
// writer is answered NotNeeded, and writers within the quiet period that
// follows a round run none (no marker written, no INFO asked).
func TestABarrierOnASingleRedisAsksOncePerQuiet(t *testing.T) {
	testRedis.Require(t)
	c := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = c.Close() })
	rep := NewReplication(c, "barrier-quiet", 1, time.Second)
	t.Cleanup(rep.Close)
	b := NewBarrier(rep, time.Hour)
	ctx := context.Background()
	res, err := b.Join(b.Mark(), "k").Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, NotNeeded, res)
	marker := "fg:replicated:barrier-quiet"
	first, err := c.Get(ctx, marker).Result()
	require.NoError(t, err, "the first writer's round wrote its marker")
	for range 20 {
		res, err := b.Join(b.Mark(), "k").Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, NotNeeded, res)
	}
	again, err := c.Get(ctx, marker).Result()
	require.NoError(t, err)
	assert.Equal(t, first, again, "writers within the quiet period ran rounds")
}

// TestABarrierOnMiniredisWaitsForNothing: the dev stack's in-memory Redis
// refuses INFO replication; writers are answered NotNeeded, not failed.
func TestABarrierOnMiniredisWaitsForNothing(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	rep := NewReplication(c, "test", 1, time.Second)
	t.Cleanup(rep.Close)
	res, err := NewBarrier(rep, time.Second).Join(Mark{}, "k").Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, NotNeeded, res)
}
