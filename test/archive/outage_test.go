package archive

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMongoDBStoppedUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord
// kills FerretDB while records keep arriving: the archiver turns unready,
// its lag grows, and once FerretDB is back it catches up, ready again,
// with exactly one document per record.
func TestMongoDBStoppedUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord(t *testing.T) {
	stopMongoDBUnderTraffic(t, func(kafka, db string) []string { return archiverArgs(kafka, db) }, false)
}

// TestWithEveryDefaultMongoDBStoppedUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord
// is the test above with every archiver setting at the product's default
// (archive.write-timeout 10 s, retries backing off to 10 s, the lag gauge
// every 5 s, 1,000-record batches, 12 partitions) but for addresses.
func TestWithEveryDefaultMongoDBStoppedUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord(t *testing.T) {
	stopMongoDBUnderTraffic(t, archiverDefaultArgs, false)
}

// TestWithEveryDefaultMongoDBFrozenUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord
// is the test above with FerretDB stopped with SIGSTOP instead of killed (a
// frozen VM or container): its connections stay open and every write waits
// unanswered, until archive.write-timeout ends it; when FerretDB runs
// again it answers them, late, and the archiver's retries meet documents
// that are already there.
func TestWithEveryDefaultMongoDBFrozenUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord(t *testing.T) {
	stopMongoDBUnderTraffic(t, archiverDefaultArgs, true)
}

// stopMongoDBUnderTraffic is TestMongoDBStoppedUnderTrafficIsCaughtUpWithExactlyOneDocumentPerRecord
// with an archiver started with args(kafka, database); with freeze,
// FerretDB is stopped with SIGSTOP and continued instead of killed and
// restarted.
func stopMongoDBUnderTraffic(t *testing.T, args func(kafka, db string) []string, freeze bool) {
	ferret.Require(t)
	kafka := startKafka(t)
	db := newArchive(t)
	a := startArchiver(t, "archiver", args(kafka, db.name))

	// A steady stream of records, about one every 2ms.
	p := newProducer(t, kafka)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				p.produce()
			}
		}
	}()
	stopProducer := sync.OnceFunc(func() { close(stop); <-stopped })
	t.Cleanup(stopProducer)

	eventually(t, 30*time.Second, 20*time.Millisecond, func() bool {
		a.RequireRunning()
		return a.archived() > 0
	}, "the archiver never wrote a document")
	code, _ := a.readyz()
	require.Equal(t, http.StatusOK, code, "ready while writing")

	if freeze {
		ferret.Freeze()
	} else {
		ferret.Kill()
	}
	down := time.Now()
	restarted := false
	t.Cleanup(func() {
		// The next tests of the package need FerretDB.
		if !restarted {
			if freeze {
				ferret.Thaw()
			} else if err := ferret.Restart(); err != nil {
				t.Errorf("restarting ferretdb: %v", err)
			}
		}
	})
	t.Logf("ferretdb stopped (frozen: %t)", freeze)

	var body string
	eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		a.RequireRunning()
		code, body = a.readyz()
		return code != 0 && code != http.StatusOK
	}, "the archiver stayed ready with MongoDB down")
	t.Logf("readyz %d: %s", code, body)
	eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		n, _ := a.metric("fleetgate_archive_write_errors_total")
		return n > 0
	}, "no failed write attempt counted with MongoDB down")
	var lag float64
	eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		lag, _ = a.inboundLag()
		return lag > 0
	}, "fleetgate_archive_lag_records stayed 0 with MongoDB down")
	first := lag
	eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		lag, _ = a.inboundLag()
		return lag > first
	}, "fleetgate_archive_lag_records stayed at %.0f with MongoDB down and records arriving", first)
	t.Logf("lag grew from %.0f to %.0f records", first, lag)

	if freeze {
		ferret.Thaw()
	} else {
		require.NoError(t, ferret.Restart())
	}
	restarted = true
	t.Logf("ferretdb back after %s down", time.Since(down).Round(time.Millisecond))
	stopProducer()
	records := p.flush()
	t.Logf("%d records produced", len(records))

	back := time.Now()
	eventually(t, 60*time.Second, 50*time.Millisecond, a.caughtUp, "the archiver never caught up (ready, lag 0)")
	eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return db.count() == int64(len(records)) },
		"the collection never held the %d records", len(records))
	t.Logf("caught up %s after ferretdb came back", time.Since(back).Round(time.Millisecond))

	db.requireExactlyOnce(records)
	written := a.counter("fleetgate_archive_documents_written_total")
	duplicates := a.counter("fleetgate_archive_documents_duplicate_total")
	errors, _ := a.metric("fleetgate_archive_write_errors_total")
	t.Logf("%.0f documents written, %.0f duplicates, %.0f failed write attempts", written, duplicates, errors)
	// One archiver from the start of the topic: each record counted once,
	// new or (a write MongoDB applied but could not acknowledge before it
	// died) duplicate.
	assert.Equal(t, float64(len(records)), written+duplicates, "each record written once")
}
