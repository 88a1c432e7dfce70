package archiver

import (
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// ferret is the MongoDB-wire server every test of the package writes to,
// each test in a database of its own. The outage test kills and restarts
// it, so the tests do not run in parallel.
var ferret testkit.TestFerretDB

func TestMain(m *testing.M) { os.Exit(testkit.RunWithFerretDB(m, &ferret)) }
