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
	dir, err := testkit.BuildBinaries("./cmd/archiver", "./cmd/fleetgate-dev")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	return testkit.RunWithFerretDB(m, &ferret)
}
