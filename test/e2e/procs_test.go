package e2e

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gomaxprocs reads go_sched_gomaxprocs_threads from a process's /metrics.
func gomaxprocs(t *testing.T, ops string) int {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(httpGet(t, "http://"+ops+"/metrics")))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_sched_gomaxprocs_threads "); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err, "go_sched_gomaxprocs_threads %q", v)
			return n
		}
	}
	t.Fatal("no go_sched_gomaxprocs_threads on /metrics")
	return 0
}

// By default (procs.adaptive) a frontend with nothing to do runs on one
// processor, whatever it started with; with procs.adaptive=false it keeps
// them all. (Getting them back under load is pkg/procs's tests.)
func TestAnIdleFrontendRunsOnOneProcessorByDefault(t *testing.T) {
	// Two processors to start with on any machine, one core or many.
	t.Setenv("GOMAXPROCS", "2")
	kafka := startKafka(t)
	def := startFrontend(t, kafka)
	fixed := startFrontend(t, kafka, "-node.id", "e2e-fixed", "-procs.adaptive=false")
	require.Equal(t, 2, gomaxprocs(t, fixed.ops), "the GOMAXPROCS the process started with")

	require.Eventually(t, func() bool { return gomaxprocs(t, def.ops) == 1 }, 60*time.Second, 250*time.Millisecond,
		"an idle frontend never went down to one processor")
	assert.Equal(t, 2, gomaxprocs(t, fixed.ops), "procs.adaptive=false leaves GOMAXPROCS as started")
	assert.Contains(t, def.Output(), "GOMAXPROCS fitted to the CPU in use")
}
