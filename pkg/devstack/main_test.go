package devstack

import (
	"fmt"
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// ferret is the MongoDB-wire server the archiver of the stack writes to in
// the tests that run one.
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

// requireMongo skips a test that needs MongoDB where FerretDB cannot be
// built (never under CI, where StartFerretDB fails instead).
func requireMongo(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
