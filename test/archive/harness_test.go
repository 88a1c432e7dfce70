package archive

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

const (
	// inbound is the archiver's default inbound topic.
	inbound = "mqtt.inbound"
	// group is the archiver's default consumer group.
	group = "fleetgate-archiver"
	// collection is the archiver's default message collection.
	collection = "message"
	// partitions of every topic the archiver creates outside the
	// default-settings tests (which keep the product's): enough for
	// records of one batch to come from several partitions.
	partitions = 4
	// sessionTimeout is the smallest the Kafka-protocol broker allows
	// (group.min.session.timeout.ms): a killed archiver's partitions move
	// to its successor this long after the kill.
	sessionTimeout = 6 * time.Second
)

// proc is a process started by a test (testkit.Proc).
type proc = testkit.Proc

// startProc runs the binary name of binDir with args.
func startProc(t *testing.T, name, binary string, args ...string) *proc {
	t.Helper()
	return testkit.StartProc(t, name, filepath.Join(binDir, binary), args...)
}

// eventually polls cond every interval until it holds, and fails the test
// with msg when it did not within timeout. Unlike require.Eventually it
// calls cond on the test's goroutine, so cond may fail the test itself.
func eventually(t *testing.T, timeout, interval time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(interval)
	}
}

// startKafka runs the Kafka-protocol broker in a process of its own, with
// its log in a directory of the test, and returns its address.
func startKafka(t *testing.T) string {
	t.Helper()
	addr, _ := startKafkaProc(t)
	return addr
}

// startKafkaProc is startKafka that also returns the broker's process.
func startKafkaProc(t *testing.T) (string, *proc) {
	t.Helper()
	addr := testkit.FreeAddr(t)
	p := startProc(t, "kafka", "fleetgate-dev", "-dev.kafka-only", "-dev.kafka-addr", addr, "-dev.data-dir", t.TempDir())
	eventually(t, 15*time.Second, 20*time.Millisecond, func() bool {
		p.RequireRunning()
		return canDial(addr)
	}, "kafka process did not listen on %s", addr)
	return addr, p
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// archiver is an archiver process and its operations address.
type archiver struct {
	*proc
	t     *testing.T
	ops   string
	kafka string
	// partitions of the inbound topic (inboundPartitions).
	partitions int
	// kafkaOpts log the test's own Kafka clients in (a superuser's SASL).
	kafkaOpts []kgo.Opt
}

// archiverArgs are the settings of the archivers of a test: the package's
// FerretDB, database db, the broker at kafka, short intervals so that a
// test sees lag, commits and recoveries within a second; extra override
// them.
func archiverArgs(kafka, db string, extra ...string) []string {
	args := []string{
		"-archive.mongodb-uri", ferret.URI, "-archive.database", db,
		"-archive.batch-interval", "50ms", "-archive.write-timeout", "2s",
		"-archive.retry-min-backoff", "50ms", "-archive.retry-max-backoff", "500ms",
		"-archiver.lag-interval", "200ms", "-archiver.session-timeout", sessionTimeout.String(),
		"-kafka.brokers", kafka, "-kafka.partitions", strconv.Itoa(partitions),
		"-subscriptions.partitions", strconv.Itoa(partitions), "-events.partitions", strconv.Itoa(partitions),
		"-log.level", "info",
	}
	return append(args, extra...)
}

// archiverDefaultArgs are the settings of an archiver with every setting
// at the product's default but for the package's FerretDB, database db
// and the broker at kafka.
func archiverDefaultArgs(kafka, db string) []string {
	return []string{"-archive.mongodb-uri", ferret.URI, "-archive.database", db, "-kafka.brokers", kafka}
}

// startArchiver runs an archiver with args (archiverArgs) and an
// operations server of its own, and waits until it is ready.
func startArchiver(t *testing.T, name string, args []string) *archiver {
	t.Helper()
	a := &archiver{t: t, ops: testkit.FreeAddr(t)}
	if i := slices.Index(args, "-kafka.brokers"); i >= 0 && i+1 < len(args) {
		a.kafka = args[i+1]
	}
	a.proc = startProc(t, name, "archiver", append(args, "-http.addr", a.ops)...)
	eventually(t, 30*time.Second, 20*time.Millisecond, func() bool {
		a.RequireRunning()
		code, _ := a.readyz()
		return code == http.StatusOK
	}, "%s never became ready", name)
	t.Logf("%s (pid %d) ready, operations on %s", name, a.Cmd.Process.Pid, a.ops)
	return a
}

// httpClient bounds every request to an operations server: /readyz pings
// MongoDB with archive.write-timeout.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// readyz returns the status code and body of /readyz; 0 when the server
// did not answer.
func (a *archiver) readyz() (int, string) {
	resp, err := httpClient.Get("http://" + a.ops + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// sample is one series of a scrape of /metrics.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrape reads /metrics in the Prometheus text format.
func (a *archiver) scrape() []sample {
	a.t.Helper()
	resp, err := httpClient.Get("http://" + a.ops + "/metrics")
	require.NoError(a.t, err, "scraping %s", a.Name)
	defer resp.Body.Close()
	require.Equal(a.t, http.StatusOK, resp.StatusCode)
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(a.t, i, "metrics line %q", line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(a.t, err, "metrics line %q", line)
		s := sample{labels: map[string]string{}, value: v}
		series := line[:i]
		if j := strings.IndexByte(series, '{'); j >= 0 {
			s.name = series[:j]
			for _, m := range labelPair.FindAllStringSubmatch(series[j:], -1) {
				s.labels[m[1]] = m[2]
			}
		} else {
			s.name = series
		}
		out = append(out, s)
	}
	require.NoError(a.t, sc.Err())
	return out
}

// metric sums the series of name (as exposed, e.g. with _total) whose
// labels include every pair of labels, and returns how many there are.
func (a *archiver) metric(name string, labels ...string) (sum float64, series int) {
	a.t.Helper()
next:
	for _, s := range a.scrape() {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		sum += s.value
		series++
	}
	return sum, series
}

// inboundLag is fleetgate_archive_lag_records of the inbound topic summed
// over its partitions, and how many partitions it reports.
func (a *archiver) inboundLag() (lag float64, series int) {
	a.t.Helper()
	return a.metric("fleetgate_archive_lag_records", "topic", inbound)
}

// counter is the sum of the counter name over the series of the message
// collection.
func (a *archiver) counter(name string) float64 {
	a.t.Helper()
	v, _ := a.metric(name, "collection", collection)
	return v
}

// archived is the documents of the message collection the archiver
// handled: written new or found there already. Tests poll it rather than
// the collection, as counting in FerretDB reads every document (about a
// second for 20,000), which would slow the archiver under test.
func (a *archiver) archived() float64 {
	a.t.Helper()
	return a.counter("fleetgate_archive_documents_written_total") + a.counter("fleetgate_archive_documents_duplicate_total")
}

// caughtUp reports whether the archiver is ready with lag 0 on every
// inbound partition.
func (a *archiver) caughtUp() bool {
	a.t.Helper()
	a.RequireRunning()
	if code, _ := a.readyz(); code != http.StatusOK {
		return false
	}
	lag, series := a.inboundLag()
	return series == a.inboundPartitions() && lag == 0
}

// inboundPartitions is how many partitions the inbound topic has, as the
// archiver's Kafka says (the test's count, or the product's default when
// the archiver created it).
func (a *archiver) inboundPartitions() int {
	a.t.Helper()
	if a.partitions > 0 {
		return a.partitions
	}
	a.partitions = testkit.Partitions(a.t, a.kafka, inbound, a.kafkaOpts...)
	return a.partitions
}

// archiveDB is the test's database on the package's FerretDB.
type archiveDB struct {
	t    *testing.T
	name string
	coll *mongo.Collection
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// newArchive returns a database of the test's own: its name is unique in
// the FerretDB of the package, also across -count runs.
func newArchive(t *testing.T) *archiveDB {
	t.Helper()
	name := strings.Trim(nonWord.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(name) > 30 {
		name = name[:30]
	}
	name = fmt.Sprintf("%s_%d", name, time.Now().UnixNano()%1_000_000_000)
	// A short server selection timeout: the outage test reads right after
	// FerretDB came back.
	cl, err := mongo.Connect(options.Client().ApplyURI(ferret.URI).SetServerSelectionTimeout(5 * time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return &archiveDB{t: t, name: name, coll: cl.Database(name).Collection(collection)}
}

// count returns the documents of the message collection, or -1 when
// MongoDB did not answer.
func (a *archiveDB) count() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n, err := a.coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		a.t.Logf("counting documents: %v", err)
		return -1
	}
	return n
}

// stored is what a message document says of its record.
type stored struct {
	ID        string `bson:"_id"`
	MessageID string `bson:"messageId"`
}

// documents returns every document of the message collection.
func (a *archiveDB) documents() []stored {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, err := a.coll.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "messageId", Value: 1}}))
	require.NoError(a.t, err)
	var docs []stored
	require.NoError(a.t, cur.All(ctx, &docs))
	return docs
}

// requireExactlyOnce checks that the collection holds exactly one document
// per produced record: as many documents as records, the set of _id the
// set of the records' coordinates, the set of messageId the set of their
// fg.message_id, and each document's messageId the one of the record at
// its coordinates.
func (a *archiveDB) requireExactlyOnce(produced map[string]string) {
	a.t.Helper()
	n := a.count()
	docs := a.documents()
	a.t.Logf("collection %s.%s: %d documents (count %d) for %d produced records", a.name, collection, len(docs), n, len(produced))

	wantMsgIDs := map[string]bool{}
	for _, id := range produced {
		wantMsgIDs[id] = true
	}
	require.Len(a.t, wantMsgIDs, len(produced), "the test produced a message id twice")

	ids := map[string]int{}
	msgIDs := map[string]int{}
	var wrong []string
	for _, d := range docs {
		ids[d.ID]++
		msgIDs[d.MessageID]++
		if want, ok := produced[d.ID]; ok && want != d.MessageID {
			wrong = append(wrong, fmt.Sprintf("%s has messageId %s, its record %s", d.ID, d.MessageID, want))
		}
	}
	missingIDs, extraIDs, doubledIDs := diff(produced, ids)
	missingMsg, extraMsg, doubledMsg := diff(wantMsgIDs, msgIDs)
	assert.Equal(a.t, int64(len(produced)), n, "count of documents")
	assert.Len(a.t, docs, len(produced), "documents read back")
	assert.Empty(a.t, missingIDs, "records without a document (%d)", len(missingIDs))
	assert.Empty(a.t, extraIDs, "documents of no produced record (%d)", len(extraIDs))
	assert.Empty(a.t, doubledIDs, "_id seen twice (%d)", len(doubledIDs))
	assert.Empty(a.t, missingMsg, "message ids without a document (%d)", len(missingMsg))
	assert.Empty(a.t, extraMsg, "message ids never produced (%d)", len(extraMsg))
	assert.Empty(a.t, doubledMsg, "message ids archived twice (%d)", len(doubledMsg))
	assert.Empty(a.t, firstFew(wrong), "documents not matching their record (%d)", len(wrong))
}

// diff compares the keys of want with the counts of got: the first few
// keys missing, unexpected and counted more than once.
func diff[V any](want map[string]V, got map[string]int) (missing, extra, doubled []string) {
	for k := range want {
		if got[k] == 0 {
			missing = append(missing, k)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
		if n > 1 {
			doubled = append(doubled, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	return firstFew(missing), firstFew(extra), firstFew(doubled)
}

// firstFew keeps a failure message short: the first ten, sorted.
func firstFew(s []string) []string {
	slices.Sort(s)
	if len(s) > 10 {
		return append(s[:10:10], fmt.Sprintf("… %d more", len(s)-10))
	}
	return s
}

// coordinates is the _id the archiver gives the document of r.
func coordinates(r *kgo.Record) string {
	return fmt.Sprintf("%s:%d:%d:%d", r.Topic, r.Partition, r.Offset, r.Timestamp.UnixMilli())
}

// producer produces inbound records as a frontend would and remembers,
// for each record Kafka acknowledged, its coordinates and message id.
type producer struct {
	t  *testing.T
	cl *kgo.Client

	mu       sync.Mutex
	produced map[string]string // coordinates → fg.message_id
	errs     []error
	seq      int
}

func newProducer(t *testing.T, kafka string, opts ...kgo.Opt) *producer {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kafka),
		// A record Kafka does not take within this long fails the test
		// rather than hang it.
		kgo.RecordDeliveryTimeout(30 * time.Second)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &producer{t: t, cl: cl, produced: map[string]string{}}
}

// clients is how many publishers the records are spread over: records
// are keyed by client id, so they land on every partition.
const clients = 64

// produce sends one record without waiting for Kafka's answer.
func (p *producer) produce() {
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.mu.Unlock()
	m := &kafkarecord.Message{
		ClientID:   fmt.Sprintf("sensor-%02d", seq%clients),
		Topic:      fmt.Sprintf("plant/%d/temp", seq%clients),
		Payload:    []byte(fmt.Sprintf(`{"seq":%d,"c":21.5}`, seq)),
		QoS:        1,
		Protocol:   5,
		MessageID:  uuid.Must(uuid.NewV7()).String(),
		Node:       "fe-test",
		ReceivedAt: time.Now(),
	}
	p.cl.Produce(context.Background(), kafkarecord.Encode(inbound, m), func(r *kgo.Record, err error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			p.errs = append(p.errs, err)
			return
		}
		p.produced[coordinates(r)] = m.MessageID
	})
}

// flush waits until Kafka answered every record and returns the produced
// records; every record must have been acknowledged.
func (p *producer) flush() map[string]string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(p.t, p.cl.Flush(ctx))
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Empty(p.t, p.errs, "producing failed")
	require.Len(p.t, p.produced, p.seq, "records acknowledged")
	return p.produced
}

// committed returns the archivers' committed offset of each inbound
// partition (absent: none).
func committed(t *testing.T, kafka string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	require.NoError(t, err)
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.Topic == inbound && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}
