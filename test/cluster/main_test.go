// Package cluster runs a whole fleetgate cluster on one machine, every part
// in a process of its own, the way operators run it: a redis-server, the
// Kafka-protocol broker (fleetgate-dev -dev.kafka-only), two dispatchers in
// one consumer group, two frontends and HAProxy in TCP mode in front of
// them. It checks what only such a cluster can show: clients on different
// nodes talk to each other, sessions move between nodes, a client id taken
// over on another node, no acknowledged message lost when a dispatcher or
// the frontend holding a subscriber is killed with SIGKILL, and the wills
// of a killed frontend's clients published by the survivors.
package cluster

import (
	"fmt"
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// binDir holds the binaries built once for the package.
var binDir string

// TestMain builds the binaries. Each test's cluster has processes, ports,
// a redis-server and a Kafka broker of its own, so the tests call
// t.Parallel: most of a test's time is waiting for a timeout it exercises
// (a session, an ack deadline, a group's rejoin), which another test's
// cluster can use.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := testkit.BuildBinaries("./cmd/frontend", "./cmd/dispatcher", "./cmd/fleetgate-dev")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	return m.Run()
}
