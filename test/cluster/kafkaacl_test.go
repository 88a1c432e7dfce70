package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// shippedKafkaUsers are the Kafka users the deploy files ship.
const shippedKafkaUsers = "../../deploy/kafka/strimzi-users.yaml"

// leastPrivilegeKafka starts a Kafka broker (kfake, in the test's process)
// that authenticates with SCRAM-SHA-512 and authorizes by ACLs: the users
// of deploy/kafka/strimzi-users.yaml with their ACLs (passwords of the
// test's own) and a superuser for the test's own clients. It returns the
// options that run the frontends and the dispatchers each as its user.
func leastPrivilegeKafka(t *testing.T) clusterOptions {
	t.Helper()
	k, flags, admin := testkit.StartKafkaWithUsers(t, shippedKafkaUsers)
	for _, user := range []string{"fleetgate-frontend", "fleetgate-dispatcher", "fleetgate-archiver"} {
		require.Contains(t, flags, user, "%s has no user %s", shippedKafkaUsers, user)
	}
	return clusterOptions{
		defaults:       true,
		kafkaAddr:      k.Cluster.ListenAddrs()[0],
		kafkaAdmin:     []kgo.Opt{admin},
		frontendArgs:   flags["fleetgate-frontend"],
		dispatcherArgs: flags["fleetgate-dispatcher"],
	}
}

// requireDurabilityRead fails unless every frontend read the inbound
// topic's durability (its replicas and min.insync.replicas:
// DescribeConfigs), which it reports at start.
func requireDurabilityRead(t *testing.T, c *testCluster) {
	t.Helper()
	for _, f := range c.frontends {
		// A first check just after the topic's creation may fail; the
		// next comes 10 s later.
		assert.Eventually(t, func() bool { return strings.Contains(f.Output(), `msg="kafka durability:`) },
			30*time.Second, 100*time.Millisecond, "%s could not read the inbound topic's configs", f.id)
	}
}

// requireNoKafkaDenial fails when a process logged an authorization error
// of Kafka.
func requireNoKafkaDenial(t *testing.T, c *testCluster) {
	t.Helper()
	for _, n := range append(append([]*node{}, c.frontends...), c.dispatchers...) {
		for _, line := range strings.Split(n.Output(), "\n") {
			assert.NotContains(t, strings.ToUpper(line), "AUTHORIZATION_FAILED", "%s was refused by Kafka's ACLs", n.id)
		}
	}
}

// TestWithEveryDefaultFrontendsAndDispatchersNeedOnlyTheirKafkaACLs runs
// the cluster against a Kafka broker that authenticates each process as
// its user of deploy/kafka/strimzi-users.yaml (SCRAM-SHA-512) and allows it
// only that user's ACLs, every fleetgate setting at its default: the
// frontends create and write their topics, the dispatchers read theirs in
// their consumer group and write the wills; a persistent session moves
// between nodes with messages queued while offline, sessions are taken
// over across nodes, a shared subscription's messages go to another member
// when a member's session ends, and the wills of a SIGKILLed frontend are
// published. No process logs a Kafka authorization error.
func TestWithEveryDefaultFrontendsAndDispatchersNeedOnlyTheirKafkaACLs(t *testing.T) {
	t.Parallel()
	o := leastPrivilegeKafka(t)
	c := startClusterWith(t, o)
	requireDurabilityRead(t, c)
	persistentSessionMoves(t, c)
	takeoverAcrossNodes(t, c)
	w := startSharedWorkers(t, c, 0, false)
	_ = w.stuckConn.Close()
	w.requireEveryJobWithTheOtherWorker(t, 30*time.Second)
	killFrontendWithWillsOn(t, c, o)
	requireNoKafkaDenial(t, c)
}
