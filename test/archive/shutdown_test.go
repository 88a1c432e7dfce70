package archive

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWithEveryDefaultASIGTERMOfTheArchiverWhileKafkaIsStoppedExitsWithinItsGrace:
// an archiver with every setting at its default, told to stop (SIGTERM)
// while Kafka is stopped (SIGSTOP: the group leave is written and never
// answered, and franz-go would retry it for minutes), gives the leave 10 s
// (kafka.LeaveTimeout), says so, and exits within deploy/kubernetes's
// terminationGracePeriodSeconds for it (30 s), not killed at its end.
func TestWithEveryDefaultASIGTERMOfTheArchiverWhileKafkaIsStoppedExitsWithinItsGrace(t *testing.T) {
	kafka, kp := startKafkaProc(t)
	db := newArchive(t)
	a := startArchiver(t, "archiver", archiverDefaultArgs(kafka, db.name))
	p := newProducer(t, kafka)
	for range 100 {
		p.produce()
	}
	require.Len(t, p.flush(), 100)
	eventually(t, 60*time.Second, 50*time.Millisecond, func() bool { return a.archived() >= 100 },
		"the archiver never wrote the 100 documents")

	require.NoError(t, kp.Cmd.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = kp.Cmd.Process.Signal(syscall.SIGCONT) })
	require.NoError(t, a.Cmd.Process.Signal(syscall.SIGTERM))
	terminated := time.Now()
	defer func() {
		if t.Failed() {
			t.Logf("archiver log:\n%s", a.Output())
		}
	}()
	code := a.Wait(30 * time.Second)
	t.Logf("archiver exited %s after SIGTERM with code %d", time.Since(terminated).Round(time.Millisecond), code)
	assert.True(t, strings.Contains(a.Output(), "kafka did not answer the group leave in time"),
		"the log says why it left without a word")
	assert.NotZero(t, code, "a shutdown that left the group without Kafka's answer is not clean")
	db.requireExactlyOnce(p.flush())
}
