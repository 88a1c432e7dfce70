package archivebench

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/ferretdb"
	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/archiver"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// archiveWrittenMetric is the archiver's counter of documents MongoDB
// acknowledged, by collection: the archiver run ends when it reaches the
// record count (the collection is counted afterwards).
const archiveWrittenMetric = "fleetgate_archive_documents_written"

// archivePoll is how often the archiver's progress is read.
const archivePoll = 20 * time.Millisecond

// archiveEnv is what the runs share: the MongoDB server, the preloaded
// Kafka and the records.
type archiveEnv struct {
	cfg      Config
	log      *slog.Logger
	progress func(string)
	runID    string

	uri       string
	serverPID int
	mongoDesc string
	ferret    *ferretProcess
	// admin counts and drops; its timeout is long, as counting a large
	// collection on FerretDB takes a while.
	admin *mongo.Client

	kafka *archiveKafka
	// recs are the preloaded records in the order of -plain-order.
	recs    []*kgo.Record
	preload Preload
	// profiled holds the sides whose CPU profile was taken (-pprof-dir).
	profiled map[string]bool
}

func newArchiveEnv(ctx context.Context, cfg Config, log *slog.Logger, progress func(string)) (_ *archiveEnv, err error) {
	e := &archiveEnv{cfg: cfg, log: log, progress: progress, runID: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff),
		profiled: map[string]bool{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	e.uri, e.serverPID = cfg.MongoURI, cfg.MongoPID
	if e.uri == "" {
		e.ferret, err = startFerret(progress)
		if err != nil {
			return nil, err
		}
		e.uri, e.serverPID = e.ferret.uri, e.ferret.pid
		e.mongoDesc = fmt.Sprintf("FerretDB %s (SQLite backend) started by the bench on %s (no -mongodb-uri)", ferretdb.Version, e.ferret.addr)
	} else {
		e.mongoDesc = redactURI(e.uri)
	}
	e.admin, err = connectMongo(ctx, e.uri, "fleetgate-bench", 5*time.Minute)
	if err != nil {
		return nil, err
	}
	e.kafka, err = openArchiveKafka(ctx, cfg, e.runID)
	if err != nil {
		return nil, err
	}
	e.recs, e.preload, err = e.kafka.preload(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	if cfg.PlainOrder == PlainOrderPartition {
		slices.SortStableFunc(e.recs, func(a, b *kgo.Record) int {
			return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		})
	}
	return e, nil
}

func (e *archiveEnv) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.kafka != nil {
		e.kafka.close(ctx)
	}
	if e.admin != nil {
		_ = e.admin.Disconnect(ctx)
	}
	if e.ferret != nil {
		e.ferret.stop()
	}
}

// database is the fresh database of one run.
func (e *archiveEnv) database(side string, round int) string {
	return fmt.Sprintf("bench_archive_%s_%s_%d", e.runID, side, round)
}

// serviceConfig is the archiver's configuration for one run: the bench's
// archive.* and archiver.* settings, a fresh database and group from the
// start of the topics, the run's topics, no operations server.
func (e *archiveEnv) serviceConfig(db, group string) (archiver.ServiceConfig, error) {
	var svc archiver.ServiceConfig
	fs := flag.NewFlagSet("archiver", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	svc.RegisterFlags(fs) // the defaults of everything the bench does not set
	svc.Archive, svc.Archiver = e.cfg.Archive, e.cfg.Archiver
	if err := setMongoURI(&svc.Archive, e.uri); err != nil {
		return svc, err
	}
	svc.Archive.Database, svc.Archive.Group = db, group
	svc.Kafka.Brokers = e.kafka.brokers
	svc.Kafka.Topic, svc.Kafka.Partitions = e.kafka.inbound, e.cfg.Partitions
	svc.Events.Topic, svc.Events.Partitions = e.kafka.events, e.cfg.Partitions
	svc.Subscriptions.Topic, svc.Subscriptions.Partitions = e.kafka.changes, e.cfg.Partitions
	svc.HTTP.Addr = ""
	return svc, svc.Validate()
}

// runArchiver runs an archiver Service in this process against a fresh
// database and group, until MongoDB acknowledged every record.
func (e *archiveEnv) runArchiver(ctx context.Context, round int) (*RunResult, error) {
	db := e.database(SideArchiver, round)
	run := &RunResult{Side: SideArchiver, Round: round, Database: db, ServerPID: e.serverPID}
	svcCfg, err := e.serviceConfig(db, "fleetgate-bench-archive-"+e.runID+fmt.Sprint("-", round))
	if err != nil {
		return nil, fmt.Errorf("archiver configuration: %w", err)
	}
	// A manual reader: the bench reads the written counter every few
	// milliseconds without a Prometheus scrape. Every other instrument is
	// dropped: collecting them all (kotel's, the lag gauge) that often
	// cost 13 % of this process's CPU, where a production archiver is
	// scraped every few seconds.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(
		func(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
			if i.Name == archiveWrittenMetric {
				return sdkmetric.Stream{}, false
			}
			return sdkmetric.Stream{Name: i.Name, Aggregation: sdkmetric.AggregationDrop{}}, true
		}))
	defer func() { _ = mp.Shutdown(context.WithoutCancel(ctx)) }()
	svc := archiver.NewService(svcCfg, e.log, &telemetry.Metrics{Provider: mp, Registry: prometheus.NewRegistry()})

	want := int64(len(e.recs))
	m := e.startMeasure(SideArchiver)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	tick := time.NewTicker(archivePoll)
	defer tick.Stop()
	deadline := time.NewTimer(e.cfg.RoundTimeout)
	defer deadline.Stop()
	var written int64
	for written < want {
		select {
		case <-ctx.Done():
			m.abort()
			cancel()
			<-done
			return nil, ctx.Err()
		case err := <-done:
			m.abort()
			return nil, fmt.Errorf("the archiver stopped after %d of %d documents: %v", written, want, err)
		case <-deadline.C:
			m.abort()
			cancel()
			<-done
			return nil, fmt.Errorf("%d of %d documents written after %v (-round-timeout)", written, want, e.cfg.RoundTimeout)
		case <-tick.C:
		}
		written, err = writtenMessages(ctx, reader)
		if err != nil {
			m.abort()
			cancel()
			<-done
			return nil, err
		}
		if written > 0 && run.FirstDocs == 0 {
			run.FirstWrite, run.FirstDocs = time.Since(m.start), written
		}
	}
	m.finish(run, want)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("the archiver's Run: %w", err)
		}
	case <-time.After(30 * time.Second):
		return nil, errors.New("the archiver's Run did not return 30s after it was cancelled")
	}
	return e.count(ctx, run, want)
}

// setMongoURI sets c.MongoURI through its flag, whatever type the field
// has (a string, or a type that keeps the password out of prints).
func setMongoURI(c *archive.Config, uri string) error {
	var tmp archive.Config
	fs := flag.NewFlagSet("archive", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tmp.RegisterFlags(fs)
	tmp = *c
	if err := fs.Set("archive.mongodb-uri", uri); err != nil {
		return fmt.Errorf("archive.mongodb-uri: %w", err)
	}
	*c = tmp
	return nil
}

// writtenMessages reads the archiver's count of message documents
// MongoDB acknowledged.
func writtenMessages(ctx context.Context, reader *sdkmetric.ManualReader) (int64, error) {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return 0, fmt.Errorf("reading the archiver's metrics: %w", err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != archiveWrittenMetric {
				continue
			}
			sum, ok := mt.Data.(metricdata.Sum[int64])
			if !ok {
				return 0, fmt.Errorf("%s is a %T, not an int64 sum", archiveWrittenMetric, mt.Data)
			}
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value("collection"); ok && v.AsString() == archiver.CollectionMessage {
					n += dp.Value
				}
			}
		}
	}
	return n, nil
}

// runPlain builds the documents of the preloaded records with
// archive.MessageDocument and inserts them with unordered InsertMany in
// batches of archive.batch-records, into a fresh database with the
// archiver's indexes (created before the clock starts).
func (e *archiveEnv) runPlain(ctx context.Context, round int) (*RunResult, error) {
	db := e.database(SidePlain, round)
	run := &RunResult{Side: SidePlain, Round: round, Database: db, ServerPID: e.serverPID}
	acfg := e.cfg.Archive
	acfg.Database = db
	if err := setMongoURI(&acfg, e.uri); err != nil {
		return nil, err
	}
	store, err := archive.Open(ctx, acfg, e.log)
	if err != nil {
		return nil, err
	}
	err = store.EnsureIndexes(ctx)
	_ = store.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("creating the archiver's indexes: %w", err)
	}
	client, err := connectMongo(ctx, e.uri, "fleetgate-bench-plain", acfg.WriteTimeout)
	if err != nil {
		return nil, err
	}
	defer func() { _ = client.Disconnect(context.WithoutCancel(ctx)) }()
	coll := client.Database(db).Collection(acfg.Collection)
	insertOpts := options.InsertMany().SetOrdered(false)
	batch := acfg.BatchRecords

	want := int64(len(e.recs))
	m := e.startMeasure(SidePlain)
	deadline := m.start.Add(e.cfg.RoundTimeout)
	docs := make([]any, 0, batch)
	for off := 0; off < len(e.recs); off += batch {
		docs = docs[:0]
		for _, r := range e.recs[off:min(off+batch, len(e.recs))] {
			docs = append(docs, archive.MessageDocument(r, acfg.Payload))
		}
		if _, err := coll.InsertMany(ctx, docs, insertOpts); err != nil {
			m.abort()
			return nil, fmt.Errorf("inserting documents %d to %d: %w", off, off+len(docs), err)
		}
		if run.FirstDocs == 0 {
			run.FirstWrite, run.FirstDocs = time.Since(m.start), int64(len(docs))
		}
		if time.Now().After(deadline) {
			m.abort()
			return nil, fmt.Errorf("%d of %d documents written after %v (-round-timeout)", off+len(docs), want, e.cfg.RoundTimeout)
		}
	}
	m.finish(run, want)
	return e.count(ctx, run, want)
}

// count counts the run's collection, drops its database (unless -keep) and
// fails the run when documents are missing.
func (e *archiveEnv) count(ctx context.Context, run *RunResult, want int64) (*RunResult, error) {
	n, err := countAndDrop(ctx, e.admin, run.Database, e.cfg.Archive.Collection, e.cfg.Keep)
	run.Documents = n
	if err != nil {
		return nil, err
	}
	if n != want {
		return nil, fmt.Errorf("%s.%s holds %d documents, want %d", run.Database, e.cfg.Archive.Collection, n, want)
	}
	return run, nil
}

// meter is what a run measures about this process and the server: CPU
// time, heap, and optionally a CPU profile.
type meter struct {
	start     time.Time
	cpu       time.Duration
	serverCPU time.Duration
	serverPID int
	heap      *heapSampler
	profile   *os.File
}

// startMeasure collects garbage (so a run does not pay for the previous
// one), then starts the clock, the heap sampler and, in the first run of
// side with -pprof-dir, a CPU profile.
func (e *archiveEnv) startMeasure(side string) *meter {
	runtime.GC()
	m := &meter{serverPID: e.serverPID}
	if e.cfg.PprofDir != "" && !e.profiled[side] {
		e.profiled[side] = true
		path := filepath.Join(e.cfg.PprofDir, "archive-"+side+".cpu.pprof")
		f, err := os.Create(path)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			m.profile = f
		} else {
			e.progress(fmt.Sprintf("cpu profile %s: not taken: %v", path, err))
			if f != nil {
				_ = f.Close()
			}
		}
	}
	m.heap = startHeapSampler()
	if m.serverPID > 0 {
		m.serverCPU, _ = measure.ReadCPUTime(m.serverPID)
	}
	m.cpu = measure.SelfCPUTime()
	m.start = time.Now()
	return m
}

// finish stops the clock and fills the run's figures.
func (m *meter) finish(run *RunResult, docs int64) {
	run.Elapsed = time.Since(m.start)
	run.CPU = measure.SelfCPUTime() - m.cpu
	if m.serverPID > 0 {
		if c, err := measure.ReadCPUTime(m.serverPID); err == nil {
			run.ServerCPU = c - m.serverCPU
		}
	}
	run.HeapStart, run.HeapPeak = m.heap.stop()
	if m.profile != nil {
		pprof.StopCPUProfile()
		_ = m.profile.Close()
		run.Profile = m.profile.Name()
		m.profile = nil
	}
	run.DocsPerSec = float64(docs) / run.Elapsed.Seconds()
	if rest := run.Elapsed - run.FirstWrite; rest > 0 && docs > run.FirstDocs {
		run.SteadyDocsPerSec = float64(docs-run.FirstDocs) / rest.Seconds()
	}
}

// abort stops the sampler and the profile of a failed run.
func (m *meter) abort() {
	m.heap.stop()
	if m.profile != nil {
		pprof.StopCPUProfile()
		_ = m.profile.Close()
		m.profile = nil
	}
}

// heapSampler records the largest live heap (the heap marked live by the
// last garbage collection, from runtime/metrics) seen every 10 ms: what a
// side needs, whatever GOGC lets garbage pile up to.
type heapSampler struct {
	start uint64
	peak  atomic.Uint64
	quit  chan struct{}
	done  chan struct{}
}

const heapLiveMetric = "/gc/heap/live:bytes"

func heapLive() uint64 {
	s := []metrics.Sample{{Name: heapLiveMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// startHeapSampler starts sampling; call it after runtime.GC, so that the
// start is the live heap of now.
func startHeapSampler() *heapSampler {
	h := &heapSampler{start: heapLive(), quit: make(chan struct{}), done: make(chan struct{})}
	h.peak.Store(h.start)
	go func() {
		defer close(h.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.quit:
				return
			case <-t.C:
				if v := heapLive(); v > h.peak.Load() {
					h.peak.Store(v)
				}
			}
		}
	}()
	return h
}

// stop ends the sampling and returns the live heap at the start and its
// peak; calling it again returns the same.
func (h *heapSampler) stop() (start, peak uint64) {
	select {
	case <-h.quit:
	default:
		close(h.quit)
	}
	<-h.done
	return h.start, h.peak.Load()
}
