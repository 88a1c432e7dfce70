package gcheadroom

import (
	"flag"
	"io"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// The tests change the process's collector settings: none runs in parallel.

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func cycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// churn allocates n bytes of garbage in 64 KiB pieces and returns how many
// collections ran meanwhile.
func churn(n int) uint64 {
	before := cycles()
	for i := 0; i < n/(64<<10); i++ {
		sink = make([]byte, 64<<10)
	}
	sink = nil
	return cycles() - before
}

// waitPercent waits for the pacer's adjustment after a collection (it runs
// on the cleanup goroutine, after the cycle).
func waitPercent(t *testing.T, want func(int) bool) int {
	t.Helper()
	var got int
	require.Eventually(t, func() bool {
		runtime.GC()
		got = Percent()
		return want(got)
	}, 10*time.Second, 10*time.Millisecond, "GOGC percent %d", got)
	return got
}

func TestAPacedProcessCollectsOncePerHeadroomAllocated(t *testing.T) {
	t.Setenv("GOGC", "")
	unpaced := churn(256 << 20)

	p := Start(Config{MinHeadroom: 64 << 20}, quiet)
	require.NotNil(t, p)
	t.Cleanup(p.Stop)
	waitPercent(t, func(pct int) bool { return pct > 100 })
	paced := churn(256 << 20)

	t.Logf("collections while allocating 256 MiB: %d with GOGC alone, %d with 64 MiB of headroom (percent %d after %d adjustments)",
		unpaced, paced, Percent(), p.Adjustments())
	assert.LessOrEqual(t, paced, uint64(256/64+2), "one collection per 64 MiB allocated, give or take the one under way")
	assert.GreaterOrEqual(t, unpaced, 4*paced, "GOGC alone collects at a heap of a few MiB")
	assert.Positive(t, p.Adjustments(), "the pacer followed the collections")
}

func TestALiveHeapLargerThanTheHeadroomLeavesGOGCsPacing(t *testing.T) {
	t.Setenv("GOGC", "")
	p := Start(Config{MinHeadroom: 16 << 20}, quiet)
	require.NotNil(t, p)
	t.Cleanup(p.Stop)
	waitPercent(t, func(pct int) bool { return pct > 100 })

	live := make([]byte, 64<<20)
	for i := range live {
		live[i] = 1 // in the heap for real
	}
	waitPercent(t, func(pct int) bool { return pct == 100 })
	runtime.KeepAlive(live)
	live = nil
	runtime.KeepAlive(live)
	waitPercent(t, func(pct int) bool { return pct > 100 })
}

func TestStopRestoresTheGOGCPercentage(t *testing.T) {
	t.Setenv("GOGC", "")
	p := Start(Config{MinHeadroom: 64 << 20}, quiet)
	require.NotNil(t, p)
	waitPercent(t, func(pct int) bool { return pct > 100 })
	p.Stop()
	p.Stop() // idempotent
	assert.Equal(t, 100, Percent())
	runtime.GC()
	runtime.GC()
	assert.Equal(t, 100, Percent(), "no adjustment after Stop")
}

func TestAnExplicitGOGCIsTheLeastPercentage(t *testing.T) {
	t.Setenv("GOGC", "100000")
	p := Start(Config{MinHeadroom: 1 << 20}, quiet)
	require.NotNil(t, p)
	assert.Equal(t, 100000, Percent(), "GOGC above what the headroom needs stays")
	p.Stop()
	assert.Equal(t, 100000, Percent(), "Stop restores GOGC's percentage")
	t.Setenv("GOGC", "")
	Start(Config{MinHeadroom: 0}, quiet).Stop() // nil: nothing to restore
	p = Start(Config{MinHeadroom: 1 << 20}, quiet)
	p.Stop()
	assert.Equal(t, 100, Percent())
}

func TestNothingIsPacedWithoutHeadroomOrWithTheCollectorOff(t *testing.T) {
	t.Setenv("GOGC", "")
	assert.Nil(t, Start(Config{MinHeadroom: 0}, quiet), "0 leaves GOGC alone")
	t.Setenv("GOGC", "off")
	assert.Nil(t, Start(Config{MinHeadroom: 64 << 20}, quiet), "GOGC=off: no collections to pace")
	var p *Pacer
	p.Stop()
	assert.Zero(t, p.Adjustments())
}

func TestTheConfigFlagTakesSizesAndRefusesNegativeOnes(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	assert.Equal(t, config.ByteSize(DefaultMinHeadroom), c.MinHeadroom)
	require.NoError(t, fs.Parse([]string{"-gc.min-headroom", "16MiB"}))
	assert.Equal(t, config.ByteSize(16<<20), c.MinHeadroom)
	require.NoError(t, c.Validate())
	c.MinHeadroom = -1
	assert.ErrorContains(t, c.Validate(), "gc.min-headroom")
}

func TestGOGCIsParsedAsTheRuntimeDoes(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		pct       int
		on        bool
	}{
		{"unset is 100", "", 100, true},
		{"a number", "250", 250, true},
		{"off", "off", 0, false},
		{"negative is off", "-1", 0, false},
		{"garbage is ignored, as by the runtime", "lots", 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pct, on := gogc(tc.env)
			assert.Equal(t, tc.on, on)
			if on {
				assert.Equal(t, tc.pct, pct)
			}
		})
	}
}

// The default every process starts with (no flag set) paces a small heap.
func TestTheDefaultConfigPacesASmallHeap(t *testing.T) {
	t.Setenv("GOGC", "")
	var c Config
	c.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	p := Start(c, quiet)
	require.NotNil(t, p, "the defaults pace the collector")
	t.Cleanup(p.Stop)
	pct := waitPercent(t, func(pct int) bool { return pct > 100 })
	t.Logf("GOGC percent with the default headroom: %d", pct)
}
