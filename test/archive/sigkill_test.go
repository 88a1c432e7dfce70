package archive

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSIGKILLOfTheArchiverMidStreamLeavesExactlyOneDocumentPerRecord kills
// an archiver with SIGKILL while it writes a stream of records in small
// batches, checks that the offsets it committed never passed a record
// without its document, and lets a second archiver take over: the
// collection then holds exactly one document per record, the second
// archiver having written again (as duplicates) what the first one wrote
// but had not committed.
func TestSIGKILLOfTheArchiverMidStreamLeavesExactlyOneDocumentPerRecord(t *testing.T) {
	killArchiverMidStream(t, func(kafka, db string) []string {
		return archiverArgs(kafka, db, "-archive.batch-records", "200")
	})
}

// TestWithEveryDefaultSIGKILLOfTheArchiverMidStreamLeavesExactlyOneDocumentPerRecord
// is the test above with every archiver setting at the product's default
// (1,000-record batches, the consumer group's 10 s session timeout before
// archiver-2 gets the dead one's partitions, 12 partitions) but for
// addresses.
func TestWithEveryDefaultSIGKILLOfTheArchiverMidStreamLeavesExactlyOneDocumentPerRecord(t *testing.T) {
	killArchiverMidStream(t, archiverDefaultArgs)
}

// killArchiverMidStream is TestSIGKILLOfTheArchiverMidStreamLeavesExactlyOneDocumentPerRecord
// with archivers started with args(kafka, database).
func killArchiverMidStream(t *testing.T, argsOf func(kafka, db string) []string) {
	ferret.Require(t)
	const n = 20_000
	kafka := startKafka(t)
	db := newArchive(t)
	args := argsOf(kafka, db.name)
	first := startArchiver(t, "archiver-1", args)

	// The producer runs while the archiver writes; its records are read
	// back once the archiver is dead.
	p := newProducer(t, kafka)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for range n {
			p.produce()
		}
	}()

	// The kill comes between 10% and 80% of the records written, as
	// archiver-1 counts the documents MongoDB acknowledged.
	var atKill float64
	eventually(t, 60*time.Second, 5*time.Millisecond, func() bool {
		first.RequireRunning()
		atKill = first.archived()
		if atKill > n*8/10 {
			t.Fatalf("the archiver wrote %.0f of %d documents before the test saw it mid-stream", atKill, n)
		}
		return atKill >= n/10
	}, "the archiver never wrote %d of %d documents", n/10, n)
	first.Kill()
	t.Logf("archiver-1 killed with at least %.0f of %d documents written", atKill, n)
	<-produced
	records := p.flush()
	require.Len(t, records, n)

	// The killed archiver commits nothing more. Every offset it
	// committed is covered by documents: it committed only batches
	// MongoDB had acknowledged.
	commits := committed(t, kafka)
	var committedSum int64
	for _, o := range commits {
		committedSum += o
	}
	docs := db.documents()
	offsets := map[int32]map[int64]bool{}
	uncommitted := 0 // documents the second archiver must write again
	for _, d := range docs {
		part, off := parseID(t, d.ID)
		if offsets[part] == nil {
			offsets[part] = map[int64]bool{}
		}
		offsets[part][off] = true
		if off >= commits[part] {
			uncommitted++
		}
	}
	for part, end := range commits {
		var missing []string
		for off := range end {
			if !offsets[part][off] {
				missing = append(missing, strconv.FormatInt(off, 10))
			}
		}
		assert.Empty(t, firstFew(missing), "partition %d committed at %d, yet these offsets below it have no document (%d)",
			part, end, len(missing))
	}
	t.Logf("after the kill: %d documents, committed offsets %v (%d records), %d documents beyond them",
		len(docs), commits, committedSum, uncommitted)

	second := startArchiver(t, "archiver-2", args)
	start := time.Now()
	last := time.Now()
	// Caught up, archiver-2 went through every record from the committed
	// offsets on, so its counters are final.
	eventually(t, 60*time.Second, 50*time.Millisecond, func() bool {
		if time.Since(last) > 2*time.Second {
			lag, series := second.inboundLag()
			t.Logf("archiver-2: %.0f records archived, lag %.0f over %d partitions", second.archived(), lag, series)
			last = time.Now()
		}
		return second.caughtUp()
	}, "archiver-2 never caught up")
	// FerretDB counts 20,000 SQLite rows slowly on a loaded machine: a
	// generous deadline, which only a failing run waits out.
	eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return db.count() == n },
		"the collection never held %d documents", n)
	t.Logf("archiver-2: caught up, %d documents, in %s", n, time.Since(start).Round(time.Millisecond))

	db.requireExactlyOnce(records)
	// archiver-2 commits what it wrote: a successor would start at the end.
	eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		var sum int64
		for _, o := range committed(t, kafka) {
			sum += o
		}
		return sum == n
	}, "archiver-2 never committed the offsets of all %d records", n)

	written := second.counter("fleetgate_archive_documents_written_total")
	duplicates := second.counter("fleetgate_archive_documents_duplicate_total")
	t.Logf("archiver-2: %.0f documents written, %.0f duplicates", written, duplicates)
	assert.Equal(t, float64(n-committedSum), written+duplicates,
		"archiver-2 wrote every record from the committed offsets on once, new or duplicate")
	// The documents beyond the committed offsets at the kill were there
	// before archiver-2 started: each is a duplicate to it (and more
	// when a batch in flight at the kill landed after they were read).
	assert.GreaterOrEqual(t, duplicates, float64(uncommitted), "duplicates of what archiver-1 wrote and did not commit")
	if uncommitted == 0 {
		// Only when archiver-1 died right after a commit, before any
		// further batch reached MongoDB.
		t.Logf("archiver-1 had committed everything it wrote; no duplicate was due")
	} else {
		assert.Positive(t, duplicates, "archiver-1 died with written, uncommitted batches")
	}
}

// parseID splits the _id of a message document,
// "<topic>:<partition>:<offset>:<timestamp ms>".
func parseID(t *testing.T, id string) (int32, int64) {
	t.Helper()
	parts := strings.Split(id, ":")
	require.Len(t, parts, 4, "_id %q", id)
	require.Equal(t, inbound, parts[0], "_id %q", id)
	part, err := strconv.ParseInt(parts[1], 10, 32)
	require.NoError(t, err, "_id %q", id)
	off, err := strconv.ParseInt(parts[2], 10, 64)
	require.NoError(t, err, "_id %q", id)
	return int32(part), off
}
