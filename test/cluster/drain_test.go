package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWithEveryDefaultSIGTERMOfAPublishersFrontendLosesNoAcknowledgedMessage
// stops a frontend with SIGTERM, as Kubernetes does in a rollout, while
// three publishers stream QoS 1 through it to a persistent subscriber on
// the other frontend, every setting at the product's default
// (shutdown.timeout 30 s, ingest.ack-timeout 30 s, the topics' 12
// partitions). The drain answers every publish it accepted once Kafka has
// it and then closes the connections: every acknowledged message reaches
// the subscriber, each publisher's in order, and the process exits 0 within
// its drain budget. (test/e2e's drain test runs one frontend with a 5 s
// budget.)
func TestWithEveryDefaultSIGTERMOfAPublishersFrontendLosesNoAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})
	in, _, survivor, victim, pubs := streamAcrossNodes(t, c)

	stop := runAll(pubs)
	time.Sleep(streamBeforeKill)
	before := make([]int, len(pubs))
	for i, p := range pubs {
		before[i] = p.ackedCount()
	}
	stopped := time.Now()
	// The drain budget (shutdown.timeout, 30 s) and a few seconds to exit.
	victim.Terminate(40 * time.Second)
	t.Logf("%s drained and exited in %s", victim.id, time.Since(stopped).Round(time.Millisecond))
	assert.Zero(t, victim.Cmd.ProcessState.ExitCode(), "a frontend stopped with SIGTERM exits 0")
	assert.True(t, strings.Contains(victim.Output(), "shutdown complete"), "the frontend logs the end of its drain")

	close(stop)
	last := waitDelivered(t, in, pubs, 60*time.Second)
	if !last.IsZero() {
		t.Logf("every acknowledged message delivered %s after the SIGTERM", last.Sub(stopped).Round(time.Millisecond))
	}
	checkStream(t, c, pubs, in.snapshot())
	for i, p := range pubs {
		require.Positive(t, before[i], "publisher %s had messages acknowledged before the SIGTERM, or the test shows nothing", p.clientID)
	}
	assert.Equal(t, survivor.id, c.owner(subscriberID), "the subscriber's session stayed on the frontend that was not stopped")
}
