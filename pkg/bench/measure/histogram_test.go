package measure

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramQuantilesAndMerge(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := 1; i <= 1000; i++ {
		a.Record(time.Duration(i) * time.Millisecond)
	}
	b.Record(0)         // clamped up to 1µs
	b.Record(time.Hour) // clamped down to the range
	a.Merge(b)
	require.EqualValues(t, 1002, a.Count())
	s := a.Summary()
	require.EqualValues(t, 1002, s.Count)
	require.InDelta(t, float64(500*time.Millisecond), float64(s.P50), float64(time.Millisecond))
	require.InDelta(t, float64(990*time.Millisecond), float64(s.P99), float64(2*time.Millisecond))
	require.InDelta(t, float64(5*time.Minute), float64(s.Max), float64(time.Second))
	require.Equal(t, LatencySummary{}, NewHistogram().Summary())
}
