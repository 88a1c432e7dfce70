package archivebench

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/internal/ferretdb"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
)

// startTestFerret starts a FerretDB for one test, stopped at its end. Where
// it cannot be built the test skips, except under CI (StartFerretDB then
// fails), as in pkg/archiver.
func startTestFerret(t *testing.T) *testkit.FerretDB {
	t.Helper()
	f, skip, err := testkit.StartFerretDB()
	require.NoError(t, err)
	if skip != "" {
		t.Skip(skip)
	}
	t.Cleanup(f.Stop)
	return f
}

func TestArchiveScenarioWritesEveryRecordOnBothSides(t *testing.T) {
	f := startTestFerret(t)
	const records = 2000
	// The flags as the command line parses them.
	var cfg Config
	fs := benchtest.NewFlagSet()
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"-mongodb-uri", f.URI, "-records", "2000", "-rounds", "2",
		"-partitions", "4", "-pause", "0s", "-keep", "-archive.batch-interval", "20ms",
		"-archiver.commit-interval", "100ms", "-archiver.lag-interval", "100ms"}))
	require.NoError(t, cfg.Validate())
	var lines []string
	res, err := Run(context.Background(), cfg, testkit.DiscardLogger(), func(s string) { lines = append(lines, s) })
	require.NoError(t, err)
	require.Contains(t, strings.Join(lines, "\n"), "preloaded 2000 records")

	require.Equal(t, records, res.Preload.Records)
	require.Contains(t, res.MongoDB, f.Addr)
	for _, side := range []*SideResult{res.Archiver, res.Plain} {
		require.Len(t, side.Runs, 2, side.Side)
		require.EqualValues(t, records, side.Documents, side.Side)
		for _, run := range side.Runs {
			require.EqualValues(t, records, run.Documents, "%s round %d", run.Side, run.Round)
			require.Positive(t, run.DocsPerSec, "%s round %d", run.Side, run.Round)
		}
	}
	// Rounds alternate: plain first in odd rounds, the archiver in even.
	require.Equal(t, 1, res.Plain.Runs[0].Round)
	require.Positive(t, res.Ratio)

	// The databases were kept: every record is a document on both sides,
	// and the two sides wrote the same documents.
	client, err := mongo.Connect(options.Client().ApplyURI(f.URI))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	docs := func(db string) []bson.M {
		coll := client.Database(db).Collection(res.Config.Archive.Collection)
		n, err := coll.CountDocuments(ctx, bson.D{})
		require.NoError(t, err)
		require.EqualValues(t, records, n, "documents in %s", db)
		cur, err := coll.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		require.NoError(t, err)
		var out []bson.M
		require.NoError(t, cur.All(ctx, &out))
		return out
	}
	for _, run := range res.Archiver.Runs[1:] {
		docs(run.Database)
	}
	for _, run := range res.Plain.Runs[1:] {
		docs(run.Database)
	}
	archived, plain := docs(res.Archiver.Runs[0].Database), docs(res.Plain.Runs[0].Database)
	require.Equal(t, plain, archived, "the plain loop writes the documents the archiver writes")
	require.Contains(t, archived[0]["properties"], bson.E{Key: "contentType", Value: "application/json"})
	require.True(t, strings.HasPrefix(archived[0]["_id"].(string), "fleetgate-bench.archive."))
}

func TestArchiveScenarioStartsFerretDBWithoutAURI(t *testing.T) {
	if _, err := ferretdb.Binary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ferretdb: %v", err)
		}
		t.Skipf("ferretdb could not be built (run `go run ./internal/cmd/ferretdb-build`): %v", err)
	}
	cfg := testArchiveConfig(t)
	cfg.Records, cfg.Rounds, cfg.Pause = 300, 1, 0
	var lines []string
	res, err := Run(context.Background(), cfg, testkit.DiscardLogger(), func(s string) { lines = append(lines, s) })
	require.NoError(t, err)
	require.Contains(t, res.MongoDB, "started by the bench")
	require.Contains(t, strings.Join(lines, "\n"), "no -mongodb-uri: started FerretDB")
	require.EqualValues(t, 300, res.Archiver.Documents)
	require.EqualValues(t, 300, res.Plain.Documents)
	require.NotNil(t, res.Archiver.Server, "the bench knows the pid of the FerretDB it started")
	require.NotNil(t, res.Plain.Server, "the bench knows the pid of the FerretDB it started")
	require.Positive(t, res.Ratio)
}

// testArchiveConfig is the scenario's configuration with the flag defaults.
func testArchiveConfig(t *testing.T) Config {
	t.Helper()
	var cfg Config
	fs := benchtest.NewFlagSet()
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, cfg.Validate())
	return cfg
}

func TestArchiveConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Config)
		error string
	}{
		{"the defaults are valid", func(*Config) {}, ""},
		{"no records is refused", func(c *Config) { c.Records = 0 }, "records"},
		{"payload-max below payload-min is refused", func(c *Config) { c.PayloadMax = c.PayloadMin - 1 }, "payload-max"},
		{"a pid without a uri is refused", func(c *Config) { c.MongoPID = 42 }, "mongodb-pid"},
		{"the archiver's own settings are checked", func(c *Config) { c.Archive.BatchRecords = 0 }, "archive.batch-records"},
		{"zero rounds is refused", func(c *Config) { c.Rounds = 0 }, "rounds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testArchiveConfig(t)
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.error == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.error)
		})
	}
}

func TestArchiveFlagsLeaveTheDatabaseAndGroupToTheBench(t *testing.T) {
	var cfg Config
	fs := benchtest.NewFlagSet()
	cfg.RegisterFlags(fs)
	for _, name := range archiverFlagsSetByBench {
		require.Nil(t, fs.Lookup(name), name)
	}
	require.NoError(t, fs.Parse([]string{"-archive.batch-records", "250", "-archiver.commit-interval", "3s"}))
	require.Equal(t, 250, cfg.Archive.BatchRecords)
	require.Equal(t, 3*time.Second, cfg.Archiver.CommitInterval)
}

func TestArchiveMessagesLookLikeFleetTelemetry(t *testing.T) {
	cfg := testArchiveConfig(t)
	rng := newArchiveRand()
	for i := range 200 {
		m := archiveMessage(rng, cfg, i, time.Now())
		require.GreaterOrEqual(t, len(m.Payload), cfg.PayloadMin)
		require.LessOrEqual(t, len(m.Payload), cfg.PayloadMax)
		require.True(t, json.Valid(m.Payload), string(m.Payload))
		require.EqualValues(t, 5, m.Protocol)
	}
}

func TestMedianAndRedaction(t *testing.T) {
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 2, 3}))
	require.Equal(t, "mongodb://db1:27017,db2:27017/archive", redactURI("mongodb://user:secret@db1:27017,db2:27017/archive?authSource=admin"))
}
