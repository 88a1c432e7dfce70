package session

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunRoundsAppliesEachSessionsRoundOnItsOwn sends the rounds of several
// sessions in one pipeline, on a plain server and on Redis Cluster: each
// session's acknowledgements, PUBREC records and take apply to it alone, and
// a fenced round fails without touching the others.
func TestRunRoundsAppliesEachSessionsRoundOnItsOwn(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name := "plain"
		if cluster {
			name = "cluster"
		}
		t.Run(name, func(t *testing.T) {
			s, raw := newTestStore(t, func(c *Config) {
				if cluster {
					c.Redis.Addrs = []string{clusterAddr}
					c.Redis.Cluster = true
				}
			})
			ctx := testCtx(t)
			a, b, stale := clientID(t, "a"), clientID(t, "}b{"), clientID(t, "stale")
			ea, eb := connect(t, s, a, "n1"), connect(t, s, b, "n1")
			oldEpoch := connect(t, s, stale, "n1")
			connect(t, s, stale, "n2") // taken over: oldEpoch is fenced
			var ds []Delivery
			for _, m := range []string{"a1", "a2", "a3", "a4"} {
				ds = append(ds, Delivery{ClientID: a, Message: []byte(m)})
			}
			ds = append(ds, Delivery{ClientID: b, Message: []byte("b1")}, Delivery{ClientID: stale, Message: []byte("s1")})
			_, err := s.Enqueue(ctx, ds)
			require.NoError(t, err)

			first := []*Round{
				{ClientID: a, Epoch: ea, Take: 3},
				{ClientID: b, Epoch: eb, Take: 10},
				{ClientID: stale, Epoch: oldEpoch, Take: 10},
			}
			s.RunRounds(ctx, first)
			require.NoError(t, first[0].Err)
			require.NoError(t, first[1].Err)
			assert.ErrorIs(t, first[2].Err, ErrFenced, "a stale epoch takes nothing")
			assert.Empty(t, first[2].Taken)
			assert.Equal(t, []string{"a1", "a2", "a3"}, messages(first[0].Taken))
			assert.Equal(t, []uint16{1, 2, 3}, packetIDs(first[0].Taken))
			assert.Equal(t, []string{"b1"}, messages(first[1].Taken))
			if !cluster {
				n, err := raw.LLen(ctx, queueKey(stale)).Result()
				require.NoError(t, err)
				assert.EqualValues(t, 1, n, "the fenced session's queue is untouched")
			}

			// The scripts vanish (a Redis restart or failover): the next
			// pipeline loads them again and runs every round once.
			if !cluster {
				require.NoError(t, raw.ScriptFlush(ctx).Err())
			}
			second := []*Round{
				// PUBACK of 1, PUBREC of 2; then room for the rest.
				{ClientID: a, Epoch: ea, Acks: []uint16{1, 999}, Pubrecs: []uint16{2}, Take: 5},
				{ClientID: b, Epoch: eb, Acks: []uint16{1}},
			}
			s.RunRounds(ctx, second)
			require.NoError(t, second[0].Err)
			require.NoError(t, second[1].Err)
			assert.Equal(t, []string{"a4"}, messages(second[0].Taken), "acks apply before the take, in one script")
			assert.Empty(t, second[1].Taken, "a round without a take takes nothing")

			inflight, err := s.Inflight(ctx, a)
			require.NoError(t, err)
			assert.Equal(t, []uint16{2, 3, 4}, inflightIDs(inflight))
			assert.True(t, inflight[0].Released, "PUBREC recorded: PUBREL is resent after a reconnect")
			assert.False(t, inflight[1].Released)
			inflight, err = s.Inflight(ctx, b)
			require.NoError(t, err)
			assert.Empty(t, inflight)
			info, err := s.Session(ctx, a)
			require.NoError(t, err)
			assert.Zero(t, info.QueuedBytes, "taking keeps the byte count of the queue")
		})
	}
}
