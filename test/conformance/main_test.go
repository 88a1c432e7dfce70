// Package conformance checks fleetgate against the normative statements of
// MQTT 3.1.1 and 5.0, through a whole cluster (Kafka, dispatcher, Redis,
// frontends) and real client libraries. Each test names the statements it
// checks as [MQTT-x.x.x-y].
//
// The clusters demand credentials as the product does at its defaults:
// every client connects as an identity of its own, its client id, with a
// JWT (clustertest.Access; creds), and each session belongs to it.
package conformance

import (
	"fmt"
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// testRedis is the redis-server every cluster of the package uses.
var testRedis testkit.TestRedis

// access signs every client's credentials.
var access *clustertest.Access

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetgate-conformance-access-")
	if err == nil {
		access, err = clustertest.NewAccess(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance: making the clients' credentials:", err)
		os.Exit(1)
	}
	code := testkit.RunWithRedis(m, false, &testRedis)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func start(t *testing.T, o clustertest.Options) *clustertest.Cluster {
	t.Helper()
	testRedis.Require(t)
	o.Access = access
	return clustertest.Start(t, testRedis.Addr, o)
}

// creds are the username and password of the client with clientID.
func creds(clientID string) (string, []byte) { return access.Credentials(clientID) }
