// Package conformance checks fleetgate against the normative statements of
// MQTT 3.1.1 and 5.0, through a whole cluster (Kafka, dispatcher, Redis,
// frontends) and real client libraries. Each test names the statements it
// checks as [MQTT-x.x.x-y].
package conformance

import (
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// testRedis is the redis-server every cluster of the package uses.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, false, &testRedis)) }

func start(t *testing.T, o clustertest.Options) *clustertest.Cluster {
	t.Helper()
	testRedis.Require(t)
	return clustertest.Start(t, testRedis.Addr, o)
}
