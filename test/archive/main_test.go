// Package archive runs the archiver as a process of its own, the way
// operators run it, between a Kafka-protocol broker process (fleetgate-dev
// -dev.kafka-only) and a FerretDB process, and checks what only whole
// processes can show: an archiver killed with SIGKILL while it writes
// leaves, once another archiver took over, exactly one document per record
// (none lost, none doubled), and a MongoDB that dies under traffic makes
// the archiver unready and lagging, then caught up with exactly one
// document per record once it is back.
package archive

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// binDir holds the binaries built once for the package.
var binDir string

// ferret is the MongoDB-wire server every test of the package writes to,
// each test in a database of its own. The outage test kills and restarts
// it, so the tests do not run in parallel.
var ferret testkit.TestFerretDB

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fleetgate-archive-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
		return 1
	}
	// The binaries are built without -race: the race detector would slow
	// the processes under test several times over, and their own packages
	// run their tests with it.
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/archiver", "./cmd/fleetgate-dev")
	build.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		return 1
	}
	return testkit.RunWithFerretDB(m, &ferret)
}
