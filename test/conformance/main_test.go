// Package conformance checks fleetgate against the normative statements of
// MQTT 3.1.1 and 5.0, through a whole cluster (Kafka, dispatcher, Redis,
// frontends) and real client libraries. Each test names the statements it
// checks as [MQTT-x.x.x-y].
package conformance

import (
	"fmt"
	"os"
	"testing"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

var (
	redisAddr  string
	skipReason string
)

func TestMain(m *testing.M) {
	r, skip, err := clustertest.StartRedis()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	skipReason = skip
	if r != nil {
		redisAddr = r.Addr
	}
	code := m.Run()
	r.Stop()
	os.Exit(code)
}

func start(t *testing.T, o clustertest.Options) *clustertest.Cluster {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	return clustertest.Start(t, redisAddr, o)
}
