package devstack

import (
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// ferret is the MongoDB-wire server the archiver of the stack writes to in
// the tests that run one.
var ferret testkit.TestFerretDB

func TestMain(m *testing.M) { os.Exit(testkit.RunWithFerretDB(m, &ferret)) }
