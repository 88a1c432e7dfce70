package archiver

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

const (
	inbound      = "mqtt.inbound"
	eventsTopic  = "mqtt.events"
	changesTopic = "mqtt.subscriptions"
	partitions   = 3
)

// fixture is a kfake cluster with the archiver's topics and a database of
// the test's own on the package's FerretDB.
type fixture struct {
	t        *testing.T
	kafka    *testkit.Kafka
	producer *kgo.Client
	adm      *kadm.Client
	mongo    *mongo.Client
	db       *mongo.Database
	dbName   string
	group    string
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ferret.Require(t)
	name := strings.ToLower(nonWord.ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	f := &fixture{t: t, kafka: testkit.StartKafka(t, kfake.SeedTopics(partitions, inbound, eventsTopic, changesTopic)),
		dbName: fmt.Sprintf("t_%s_%d", name, time.Now().UnixNano()%1_000_000), group: "archiver-" + name}
	var err error
	f.producer, err = kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.DefaultProduceTopic(inbound))
	require.NoError(t, err)
	t.Cleanup(f.producer.Close)
	f.adm = kadm.NewClient(f.producer)
	// Short timeouts: the outage test reads while FerretDB is down.
	f.mongo, err = mongo.Connect(options.Client().ApplyURI(ferret.URI).SetServerSelectionTimeout(5 * time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.mongo.Disconnect(context.Background()) })
	f.db = f.mongo.Database(f.dbName)
	return f
}

func (f *fixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	f.t.Cleanup(cancel)
	return ctx
}

// config is the archiver configuration of the fixture: short intervals and
// backoffs, the test's database and group; extra flags override it.
//
// archive.write-timeout stays at its default: a write that times out on
// the client may still land (FerretDB stalls for seconds on a loaded
// 2-core machine), and its retry then counts duplicates, which the tests
// count exactly.
func (f *fixture) config(extra ...string) ServiceConfig {
	f.t.Helper()
	return f.parse(append([]string{
		"-archive.batch-interval", "20ms",
		"-archive.retry-min-backoff", "20ms", "-archive.retry-max-backoff", "200ms",
		"-archiver.commit-interval", "100ms", "-archiver.lag-interval", "100ms",
	}, extra...)...)
}

// parse is the archiver configuration with every setting at its default
// but where the test's FerretDB, database, group and Kafka are, and args.
func (f *fixture) parse(args ...string) ServiceConfig {
	f.t.Helper()
	var cfg ServiceConfig
	fs := flag.NewFlagSet("archiver", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	base := []string{
		"-archive.mongodb-uri", ferret.URI, "-archive.database", f.dbName, "-archive.group", f.group,
		"-kafka.brokers", f.kafka.Addr(), "-kafka.partitions", fmt.Sprint(partitions),
		"-subscriptions.partitions", fmt.Sprint(partitions), "-events.partitions", fmt.Sprint(partitions),
		"-http.addr", "127.0.0.1:0", "-log.level", "debug",
	}
	require.NoError(f.t, fs.Parse(append(base, args...)))
	require.NoError(f.t, cfg.Validate())
	return cfg
}

// archiverRun is a Service running in the test process.
type archiverRun struct {
	t      *testing.T
	svc    *Service
	tel    *telemetry.Metrics
	log    *os.File
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs an archiver with the fixture's configuration and extra flags;
// it is stopped at the end of the test, and Run must return nil.
func (f *fixture) start(extra ...string) *archiverRun {
	f.t.Helper()
	return f.run(f.config(extra...))
}

// run runs an archiver with cfg, as start does.
func (f *fixture) run(cfg ServiceConfig) *archiverRun {
	f.t.Helper()
	tel, err := telemetry.NewMetrics()
	require.NoError(f.t, err)
	// The log goes to a file (writes to an *os.File are safe from any
	// goroutine, also after the test ended) and is shown on failure.
	logFile, err := os.Create(filepath.Join(f.t.TempDir(), "archiver.log"))
	require.NoError(f.t, err)
	a := &archiverRun{t: f.t, tel: tel, log: logFile, done: make(chan error, 1)}
	a.svc = NewService(cfg, slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelDebug})), tel)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- a.svc.Run(ctx) }()
	f.t.Cleanup(func() {
		a.stop()
		if f.t.Failed() {
			b, _ := os.ReadFile(a.log.Name())
			f.t.Logf("archiver log:\n%s", b)
		}
		_ = a.log.Close()
	})
	require.Eventually(f.t, func() bool { return a.svc.OpsAddr() != "" }, 10*time.Second, 10*time.Millisecond)
	return a
}

// stop cancels the archiver and waits for Run to return nil.
func (a *archiverRun) stop() {
	a.once.Do(func() {
		a.cancel()
		select {
		case err := <-a.done:
			assert.NoError(a.t, err, "Run returns nil when cancelled")
		case <-time.After(20 * time.Second):
			a.t.Error("Run did not return 20s after cancel")
		}
	})
}

// readyz returns the status code and body of /readyz.
func (a *archiverRun) readyz() (int, string) {
	resp, err := http.Get("http://" + a.svc.OpsAddr() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *archiverRun) ready() bool {
	code, _ := a.readyz()
	return code == http.StatusOK
}

// metric sums the series of the metric family name (as exposed, e.g. with
// _total) whose labels include every pair of labels.
func (a *archiverRun) metric(name string, labels ...string) float64 {
	a.t.Helper()
	mfs, err := a.tel.Registry.Gather()
	require.NoError(a.t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// lagSeries returns how many partitions fleetgate_archive_lag_records
// reports, and their sum.
func (a *archiverRun) lagSeries() (series int, sum float64) {
	mfs, err := a.tel.Registry.Gather()
	require.NoError(a.t, err)
	for _, mf := range mfs {
		if mf.GetName() == "fleetgate_archive_lag_records" {
			for _, m := range mf.GetMetric() {
				series++
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return series, sum
}

// waitCaughtUp waits until the archiver is ready and its lag gauge reports
// every owned partition at 0.
func (a *archiverRun) waitCaughtUp(timeout time.Duration) {
	a.t.Helper()
	require.Eventually(a.t, func() bool {
		n, sum := a.lagSeries()
		return a.ready() && n > 0 && sum == 0
	}, timeout, 20*time.Millisecond, "archiver never ready with lag 0")
}

// produce writes recs and fails the test if Kafka refuses one.
func (f *fixture) produce(recs ...*kgo.Record) {
	f.t.Helper()
	require.NoError(f.t, f.producer.ProduceSync(f.ctx(), recs...).FirstErr())
}

// count is the number of documents in collection matching filter.
func (f *fixture) count(collection string, filter any) int64 {
	f.t.Helper()
	n, err := f.db.Collection(collection).CountDocuments(f.ctx(), filter)
	require.NoError(f.t, err)
	return n
}

// waitCount waits until collection holds n documents.
func (f *fixture) waitCount(collection string, n int64, timeout time.Duration) {
	f.t.Helper()
	var last int64
	require.Eventually(f.t, func() bool {
		c, err := f.db.Collection(collection).CountDocuments(context.Background(), bson.D{})
		if err != nil {
			return false
		}
		last = c
		return c == n
	}, timeout, 20*time.Millisecond, "documents in %s: want %d, last seen %d", collection, n, &last)
}

// find returns the documents of collection matching filter, by _id.
func (f *fixture) find(collection string, filter any) []bson.M {
	f.t.Helper()
	cur, err := f.db.Collection(collection).Find(f.ctx(), filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	require.NoError(f.t, err)
	var docs []bson.M
	require.NoError(f.t, cur.All(f.ctx(), &docs))
	return docs
}

// committed returns the group's committed offset of each partition of
// topic (absent: none).
func (f *fixture) committed(topic string) map[int32]int64 {
	f.t.Helper()
	offs, err := f.adm.FetchOffsets(f.ctx(), f.group)
	require.NoError(f.t, err)
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.Topic == topic && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// endOffsets returns the end offset of each partition of topic.
func (f *fixture) endOffsets(topic string) map[int32]int64 {
	f.t.Helper()
	ends, err := f.adm.ListEndOffsets(f.ctx(), topic)
	require.NoError(f.t, err)
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		require.NoError(f.t, o.Err)
		out[o.Partition] = o.Offset
	})
	return out
}

// storedRecord is what the test reads back of one inbound record.
type storedRecord struct {
	messageID string
}

// recordAt reads the inbound record at partition and offset from Kafka.
func (f *fixture) recordAt(partition int32, offset int64) storedRecord {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		inbound: {partition: kgo.NewOffset().At(offset)}}))
	require.NoError(f.t, err)
	defer cl.Close()
	for {
		fs := cl.PollFetches(f.ctx())
		require.NoError(f.t, f.ctx().Err())
		var out *storedRecord
		fs.EachRecord(func(r *kgo.Record) {
			if out == nil && r.Offset == offset {
				id, _ := testkit.Header(r, "fg.message_id")
				out = &storedRecord{messageID: id}
			}
		})
		if out != nil {
			return *out
		}
	}
}

// nonEmpty keeps the partitions of offsets that hold records.
func (f *fixture) nonEmpty(offsets map[int32]int64) map[int32]int64 {
	out := map[int32]int64{}
	for p, o := range offsets {
		if o > 0 {
			out[p] = o
		}
	}
	return out
}
