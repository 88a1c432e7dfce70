package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEveryNodeSaysWhatItsDependenciesDoWithAcknowledgedWrites: with every
// setting at its default, each dispatcher finds that the package's
// redis-server runs without its append-only file (as it does here) and
// says so on /metrics and in a warning (and that, without a replica, its
// commits wait for none), and each frontend reports the
// inbound topic's replication on a one-broker Kafka (information, not a
// warning: nothing more is possible there).
func TestEveryNodeSaysWhatItsDependenciesDoWithAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, clusterOptions{defaults: true})

	redisSeries := fmt.Sprintf(`fleetgate_redis_durable{fsync="off",server=%q} 0`, c.redisAddr)
	for _, d := range c.dispatchers {
		require.Eventually(t, func() bool { return strings.Contains(metricsOf(t, d.ops), redisSeries) },
			15*time.Second, 100*time.Millisecond, "%s never reported %s:\n%s", d.id, redisSeries, metricsOf(t, d.ops))
		require.Contains(t, d.Output(), `level=WARN msg="redis persistence: the append-only file is off`, d.id)
		require.Contains(t, d.Output(), `msg="redis replication: no primary has a replica, routed offsets are committed as soon as the primary has the writes"`, d.id)
	}
	for _, f := range c.frontends {
		for _, series := range []string{
			"fleetgate_kafka_brokers 1",
			`fleetgate_kafka_topic_replicas{topic="mqtt.inbound"} 1`,
			`fleetgate_kafka_topic_min_insync_replicas{topic="mqtt.inbound"} 1`,
		} {
			require.Eventually(t, func() bool { return strings.Contains(metricsOf(t, f.ops), series) },
				15*time.Second, 100*time.Millisecond, "%s never reported %s", f.id, series)
		}
		require.Contains(t, f.Output(), `level=INFO msg="kafka durability: one Kafka broker`, f.id)
	}
}
