package compare

import (
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
)

// broker is the mosquitto every test of the package shares, started once by
// TestMain on a free port.
var broker benchtest.Mosquitto

func TestMain(m *testing.M) { os.Exit(benchtest.RunWithMosquitto(m, &broker)) }
