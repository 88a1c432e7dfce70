package archiver

import (
	"fmt"
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// ferret is the MongoDB-wire server every test of the package writes to,
// each test in a database of its own. The outage test kills and restarts
// it, so the tests do not run in parallel.
var (
	ferret     *testkit.FerretDB
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	f, skip, err := testkit.StartFerretDB()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting ferretdb:", err)
		return 1
	}
	if skip != "" {
		skipReason = skip
		return m.Run()
	}
	ferret = f
	defer f.Stop()
	return m.Run()
}

func requireMongo(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
