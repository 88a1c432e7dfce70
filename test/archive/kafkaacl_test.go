package archive

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestWithEveryDefaultTheArchiverNeedsOnlyItsKafkaACLs runs an archiver,
// every setting at the product's default, against a Kafka broker that
// authenticates it as the fleetgate-archiver user of
// deploy/kafka/strimzi-users.yaml (SCRAM-SHA-512) and allows it only that
// user's ACLs: it creates its topics, reads them in its consumer group and
// archives every record exactly once, and logs no Kafka authorization
// error.
func TestWithEveryDefaultTheArchiverNeedsOnlyItsKafkaACLs(t *testing.T) {
	ferret.Require(t)
	k, flags, admin := testkit.StartKafkaWithUsers(t, "../../deploy/kafka/strimzi-users.yaml")
	require.Contains(t, flags, "fleetgate-archiver")
	kafka := k.Cluster.ListenAddrs()[0]
	db := newArchive(t)
	a := startArchiver(t, "archiver", append(archiverDefaultArgs(kafka, db.name), flags["fleetgate-archiver"]...))
	a.kafkaOpts = []kgo.Opt{admin}

	const n = 500
	p := newProducer(t, kafka, admin)
	for range n {
		p.produce()
	}
	records := p.flush()
	eventually(t, 60*time.Second, 50*time.Millisecond, func() bool { return a.caughtUp() && db.count() >= n },
		"the archiver never caught up (%d of %d documents)", db.count(), n)
	db.requireExactlyOnce(records)
	for _, line := range strings.Split(a.Output(), "\n") {
		assert.NotContains(t, strings.ToUpper(line), "AUTHORIZATION_FAILED", "the archiver was refused by Kafka's ACLs")
	}
}
