package gcheadroom

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// DefaultMinHeadroom is gc.min-headroom's default: a few times what a busy
// node keeps live, and small beside any memory limit a node runs with.
const DefaultMinHeadroom = 32 << 20

// minHeap is the heap Go collects at least at (its 4 MB minimum): the
// live heap taken before the first collection reports one.
const minHeap = 4 << 20

// Config is the collector's pacing.
type Config struct {
	// MinHeadroom is how much a process allocates at least between two
	// collections; 0 leaves the pacing to GOGC alone.
	MinHeadroom config.ByteSize `yaml:"min_headroom"`
}

// RegisterFlags registers gc.min-headroom.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.MinHeadroom = DefaultMinHeadroom
	fs.Var(&c.MinHeadroom, "gc.min-headroom", "The garbage collector runs only after at least this much was allocated since its last run, however little the process keeps live: fewer collections, and fewer connection stacks shrunk and grown again, for up to this much more memory. GOGC's own pacing takes over once the live heap is larger; GOMEMLIMIT still bounds it. 0: GOGC alone.")
}

// Validate names the bad field.
func (c *Config) Validate() error {
	if c.MinHeadroom < 0 {
		return fmt.Errorf("gc.min-headroom: %d must not be negative", c.MinHeadroom)
	}
	return nil
}

// Pacer adjusts the GOGC percentage after every collection. Start one per
// process: the percentage is the process's.
type Pacer struct {
	headroom uint64
	base     int // the GOGC percentage the process started with

	stopped atomic.Bool
	mu      sync.Mutex // guards percent, sample and the SetGCPercent calls
	percent int
	sample  []metrics.Sample
	runs    atomic.Int64
}

// Start paces the collector for c, or does nothing (a nil Pacer, whose
// Stop does nothing) when c.MinHeadroom is 0 or GOGC=off turned the
// collector off.
func Start(c Config, log *slog.Logger) *Pacer {
	base, on := gogc(os.Getenv("GOGC"))
	if c.MinHeadroom <= 0 || !on {
		return nil
	}
	p := &Pacer{headroom: uint64(c.MinHeadroom), base: base, percent: Percent(),
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	p.adjust()
	p.arm()
	// The percentage in force is go_gc_gogc_percent on /metrics.
	log.Info("garbage collector paced: it runs after gc.min-headroom of allocation at least", "min_headroom_bytes", p.headroom, "gogc", base, "percent", Percent())
	return p
}

// gogc parses GOGC as the runtime does: empty is 100, "off" turns the
// collector off.
func gogc(s string) (percent int, on bool) {
	if s == "" {
		return 100, true
	}
	if s == "off" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 100, true // the runtime ignores a GOGC it cannot parse
	}
	if n < 0 {
		return 0, false
	}
	return n, true
}

// sentinel is the object whose cleanup runs after each collection.
type sentinel struct{ _ *byte }

// arm allocates a sentinel that nothing references: the collection that
// finds it unreachable queues its cleanup, which adjusts the percentage and
// arms the next.
func (p *Pacer) arm() {
	runtime.AddCleanup(new(sentinel), func(p *Pacer) {
		if p.stopped.Load() {
			return
		}
		p.runs.Add(1)
		p.adjust()
		p.arm()
	}, p)
}

// adjust sets the percentage for the next collection: GOGC's, or the one
// that leaves MinHeadroom above the live heap, whichever is larger.
func (p *Pacer) adjust() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped.Load() {
		return
	}
	metrics.Read(p.sample)
	live := uint64(minHeap)
	if v := p.sample[0].Value; v.Kind() == metrics.KindUint64 && v.Uint64() > live {
		live = v.Uint64()
	}
	want := max(p.base, int((p.headroom*100+live-1)/live))
	if want != p.percent {
		debug.SetGCPercent(want)
		p.percent = want
	}
}

// Percent is the process's GOGC percentage in force (runtime/metrics
// /gc/gogc:percent), paced or not.
func Percent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// Adjustments is how many collections the pacer has followed.
func (p *Pacer) Adjustments() int64 {
	if p == nil {
		return 0
	}
	return p.runs.Load()
}

// Stop restores GOGC's percentage; later collections adjust nothing.
func (p *Pacer) Stop() {
	if p == nil || p.stopped.Swap(true) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	debug.SetGCPercent(p.base)
	p.percent = p.base
}
