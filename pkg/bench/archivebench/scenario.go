package archivebench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/archiver"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// Orders the plain loop can insert the records in.
const (
	PlainOrderPartition = "partition"
	PlainOrderProduced  = "produced"
)

// Target is the ratio archiver/plain the archiver is meant to reach.
const Target = 0.8

// Sides of the archive scenario.
const (
	SideArchiver = "archiver"
	SidePlain    = "plain"
)

// Config is the archive scenario: Records inbound records preloaded
// into Kafka, then written to MongoDB by the archiver (a Service run in this
// process, from the start of the topic) and by a plain bulk-insert loop,
// alternately, Rounds times each, into a fresh database every time.
type Config struct {
	// MongoURI is the MongoDB-wire server both sides write to; empty
	// starts a FerretDB (SQLite backend) in a temporary directory. Never
	// printed: it may hold a password.
	MongoURI string `json:"-"`
	// MongoPID is the pid of the server at MongoURI, for its CPU time
	// (known without it when the bench starts FerretDB itself).
	MongoPID int `json:"mongodb_pid,omitempty"`
	// Brokers is a comma-separated list of Kafka brokers; empty runs an
	// in-process kfake cluster.
	Brokers    string `json:"brokers,omitempty"`
	Records    int    `json:"records"`
	Partitions int    `json:"partitions"`
	// Clients is how many publishers the records come from (the record
	// key, which picks the partition).
	Clients    int `json:"clients"`
	PayloadMin int `json:"payload_min"`
	PayloadMax int `json:"payload_max"`
	Rounds     int `json:"rounds"`
	// Pause between two runs, for the server to settle.
	Pause time.Duration `json:"pause_ns"`
	// RoundTimeout bounds one run of either side.
	RoundTimeout time.Duration `json:"round_timeout_ns"`
	// PprofDir receives a CPU profile of this process during the first
	// run of each side (archive-<side>.cpu.pprof); empty takes none.
	PprofDir string `json:"pprof_dir,omitempty"`
	// PlainOrder is the order the plain loop inserts the records in:
	// PlainOrderPartition (one partition after another, offsets ascending,
	// as a consumer of the topic sees them) or PlainOrderProduced.
	PlainOrder string `json:"plain_order"`
	// Keep leaves the databases in place instead of dropping each after
	// its run is counted.
	Keep bool `json:"keep,omitempty"`
	// Archive and Archiver are the archiver's settings (the archive.* and
	// archiver.* flags of the archiver binary). The plain loop uses the
	// same batch size, payload mode, collection and write timeout. The
	// database, group and start point are the bench's, set per run, and
	// MongoURI stays empty here.
	Archive  archive.Config  `json:"archive"`
	Archiver archiver.Config `json:"archiver"`
}

// archiverFlagsSetByBench are the archive.* flags the scenario sets itself.
var archiverFlagsSetByBench = []string{"archive.mongodb-uri", "archive.database", "archive.group"}

// RegisterFlags registers the scenario's flags, and the archiver's own
// archive.* and archiver.* flags under their names in the archiver binary.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.MongoURI, "mongodb-uri", "", "MongoDB-wire server both sides write to; empty starts FerretDB "+
		"(SQLite backend, built once into the user cache) in a temporary directory.")
	fs.IntVar(&c.MongoPID, "mongodb-pid", 0, "Pid of the server at -mongodb-uri, for its CPU time.")
	fs.StringVar(&c.Brokers, "brokers", "", "Comma-separated Kafka brokers; empty runs an in-process kfake cluster. The bench creates topics of its own and deletes them at the end.")
	fs.IntVar(&c.Records, "records", 100_000, "Inbound records preloaded into Kafka and written by each run.")
	fs.IntVar(&c.Partitions, "partitions", 12, "Partitions of the inbound topic (the archiver's kafka.partitions default).")
	fs.IntVar(&c.Clients, "clients", 1000, "Publishers the records come from: the record key, which picks the partition.")
	fs.IntVar(&c.PayloadMin, "payload-min", 100, "Smallest JSON payload in bytes (the JSON skeleton, about 100 bytes, is the floor).")
	fs.IntVar(&c.PayloadMax, "payload-max", 200, "Largest JSON payload in bytes.")
	fs.IntVar(&c.Rounds, "rounds", 3, "Runs per side; the sides alternate and their order flips every round.")
	fs.DurationVar(&c.Pause, "pause", 2*time.Second, "Pause between two runs.")
	fs.DurationVar(&c.RoundTimeout, "round-timeout", 10*time.Minute, "Longest one run may take.")
	fs.StringVar(&c.PprofDir, "pprof-dir", "", "Write a CPU profile of this process during the first run of each side to DIR/archive-<side>.cpu.pprof.")
	fs.StringVar(&c.PlainOrder, "plain-order", PlainOrderPartition, "Order of the plain loop's inserts: partition (one partition after another, offsets ascending, "+
		"as a consumer of the topic and the archiver see them) or produced (the order the records were produced in, partitions interleaved).")
	fs.BoolVar(&c.Keep, "keep", false, "Keep the databases of the runs instead of dropping them.")

	inner := flag.NewFlagSet("archiver", flag.ContinueOnError)
	c.Archive.RegisterFlags(inner)
	c.Archiver.RegisterFlags(inner)
	inner.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(archiverFlagsSetByBench, f.Name) {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Records >= 1, "records: %d must be at least 1", c.Records)
	check(c.Partitions >= 1, "partitions: %d must be at least 1", c.Partitions)
	check(c.Clients >= 1, "clients: %d must be at least 1", c.Clients)
	check(c.PayloadMin >= 1, "payload-min: %d must be at least 1", c.PayloadMin)
	check(c.PayloadMax >= c.PayloadMin, "payload-max: %d must be at least payload-min (%d)", c.PayloadMax, c.PayloadMin)
	check(c.Rounds >= 1, "rounds: %d must be at least 1", c.Rounds)
	check(c.Pause >= 0, "pause: %s must not be negative", c.Pause)
	check(c.PlainOrder == PlainOrderPartition || c.PlainOrder == PlainOrderProduced, "plain-order: %q must be %s or %s", c.PlainOrder, PlainOrderPartition, PlainOrderProduced)
	check(c.RoundTimeout > 0, "round-timeout: %s must be positive", c.RoundTimeout)
	check(c.MongoPID >= 0, "mongodb-pid: %d must not be negative", c.MongoPID)
	check(c.MongoPID == 0 || c.MongoURI != "", "mongodb-pid: only with -mongodb-uri (the bench knows the pid of the FerretDB it starts)")
	check(c.Archive.MongoURI == "", "archive.mongodb-uri: use -mongodb-uri")
	errs = append(errs, c.Archive.Validate(), c.Archiver.Validate())
	return errors.Join(errs...)
}

// Result is the outcome of the archive scenario.
type Result struct {
	Config Config `json:"config"`
	// MongoDB says which server was written to (the URI without
	// credentials, or the FerretDB the bench started).
	MongoDB string `json:"mongodb"`
	// Kafka says which Kafka the records came from.
	Kafka   string  `json:"kafka"`
	Preload Preload `json:"preload"`
	// Archiver and Plain aggregate the runs of each side.
	Archiver *SideResult `json:"archiver"`
	Plain    *SideResult `json:"plain"`
	// Ratio is the archiver's median documents/s over the plain loop's,
	// each measured from its start; SteadyRatio the same after each
	// side's first write.
	Ratio       float64 `json:"ratio"`
	SteadyRatio float64 `json:"steady_ratio"`
}

// Preload describes the records the runs write.
type Preload struct {
	Records int `json:"records"`
	// RecordBytes is the mean size of key, value and headers of a record.
	RecordBytes float64 `json:"record_bytes"`
	// PayloadBytes is the mean payload size.
	PayloadBytes float64       `json:"payload_bytes"`
	Headers      float64       `json:"headers"`
	Took         time.Duration `json:"took_ns"`
}

// SideResult is one side over all its runs: medians of the runs, the
// largest heap peak.
type SideResult struct {
	Side             string        `json:"side"`
	Runs             []*RunResult  `json:"runs"`
	DocsPerSec       float64       `json:"docs_per_sec"`
	SteadyDocsPerSec float64       `json:"steady_docs_per_sec"`
	Elapsed          time.Duration `json:"elapsed_ns"`
	FirstWrite       time.Duration `json:"first_write_ns"`
	CPUPerDoc        time.Duration `json:"cpu_per_doc_ns"`
	CPUPercent       float64       `json:"cpu_percent"`
	Server           *ServerUsage  `json:"server,omitempty"`
	HeapStart        uint64        `json:"heap_start_bytes"`
	HeapPeak         uint64        `json:"heap_peak_bytes"`
	Documents        int64         `json:"documents"`
	Profile          string        `json:"profile,omitempty"`
}

// ServerUsage is the CPU the MongoDB server spent during the runs.
type ServerUsage struct {
	CPUPerDoc  time.Duration `json:"cpu_per_doc_ns"`
	CPUPercent float64       `json:"cpu_percent"`
}

// RunResult is one run of one side.
type RunResult struct {
	Side     string `json:"side"`
	Round    int    `json:"round"`
	Database string `json:"database"`
	// Documents is how many documents the collection held after the run
	// (counted, not taken from the side's own figures).
	Documents int64 `json:"documents"`
	// Elapsed runs from the start of the side (the Service's Run, the
	// loop's first document) until MongoDB acknowledged the last document.
	Elapsed    time.Duration `json:"elapsed_ns"`
	DocsPerSec float64       `json:"docs_per_sec"`
	// FirstWrite is when the first documents were acknowledged, and
	// FirstDocs how many; SteadyDocsPerSec is the rate after that.
	FirstWrite       time.Duration `json:"first_write_ns"`
	FirstDocs        int64         `json:"first_docs"`
	SteadyDocsPerSec float64       `json:"steady_docs_per_sec"`
	// CPU is this process's CPU time during the run (the in-process kfake
	// included); ServerCPU the MongoDB server's, when its pid is known.
	CPU       time.Duration `json:"cpu_ns"`
	ServerCPU time.Duration `json:"server_cpu_ns,omitempty"`
	ServerPID int           `json:"server_pid,omitempty"`
	// HeapStart and HeapPeak are this process's live heap (as marked by
	// the last garbage collection) at the start, right after a forced
	// collection, and at its largest, sampled every 10 ms.
	HeapStart uint64 `json:"heap_start_bytes"`
	HeapPeak  uint64 `json:"heap_peak_bytes"`
	Profile   string `json:"profile,omitempty"`
}

// Run runs the archive scenario. log receives the archiver's own log lines,
// progress (when set) a line now and then.
func Run(ctx context.Context, cfg Config, log *slog.Logger, progress func(string)) (*Result, error) {
	if progress == nil {
		progress = func(string) {}
	}
	env, err := newArchiveEnv(ctx, cfg, log, progress)
	if err != nil {
		return nil, err
	}
	defer env.close()

	res := &Result{Config: cfg, MongoDB: env.mongoDesc, Kafka: env.kafka.desc, Preload: env.preload}
	var archRuns, plainRuns []*RunResult
	first := true
	for round := 1; round <= cfg.Rounds; round++ {
		order := []string{SidePlain, SideArchiver}
		if round%2 == 0 {
			order = []string{SideArchiver, SidePlain}
		}
		for _, side := range order {
			if !first {
				if err := sleepCtx(ctx, cfg.Pause); err != nil {
					return nil, err
				}
			}
			first = false
			var run *RunResult
			if side == SideArchiver {
				run, err = env.runArchiver(ctx, round)
				archRuns = append(archRuns, run)
			} else {
				run, err = env.runPlain(ctx, round)
				plainRuns = append(plainRuns, run)
			}
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", side, round, err)
			}
			progress(fmt.Sprintf("%s round %d: %s documents/s (%d documents in %v; first write after %v, then %s/s)",
				side, round, measure.FormatRate(run.DocsPerSec), run.Documents, run.Elapsed.Round(time.Millisecond),
				run.FirstWrite.Round(time.Millisecond), measure.FormatRate(run.SteadyDocsPerSec)))
		}
	}
	res.Archiver = mergeRuns(SideArchiver, archRuns)
	res.Plain = mergeRuns(SidePlain, plainRuns)
	if res.Plain.DocsPerSec > 0 {
		res.Ratio = res.Archiver.DocsPerSec / res.Plain.DocsPerSec
	}
	if res.Plain.SteadyDocsPerSec > 0 {
		res.SteadyRatio = res.Archiver.SteadyDocsPerSec / res.Plain.SteadyDocsPerSec
	}
	return res, nil
}

// mergeRuns aggregates the runs of one side: medians, and the
// largest heap peak.
func mergeRuns(side string, runs []*RunResult) *SideResult {
	s := &SideResult{Side: side, Runs: runs}
	if len(runs) == 0 {
		return s
	}
	pick := func(f func(*RunResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return median(v)
	}
	s.DocsPerSec = pick(func(r *RunResult) float64 { return r.DocsPerSec })
	s.SteadyDocsPerSec = pick(func(r *RunResult) float64 { return r.SteadyDocsPerSec })
	s.Elapsed = time.Duration(pick(func(r *RunResult) float64 { return float64(r.Elapsed) }))
	s.FirstWrite = time.Duration(pick(func(r *RunResult) float64 { return float64(r.FirstWrite) }))
	s.CPUPerDoc = time.Duration(pick(func(r *RunResult) float64 { return float64(r.CPU) / float64(max(r.Documents, 1)) }))
	s.CPUPercent = pick(func(r *RunResult) float64 { return percentOf(r.CPU, r.Elapsed) })
	s.HeapStart = uint64(pick(func(r *RunResult) float64 { return float64(r.HeapStart) }))
	s.Documents = runs[0].Documents
	for _, r := range runs {
		s.HeapPeak = max(s.HeapPeak, r.HeapPeak)
		s.Documents = min(s.Documents, r.Documents)
		if r.Profile != "" && s.Profile == "" {
			s.Profile = r.Profile
		}
	}
	if runs[0].ServerPID > 0 {
		s.Server = &ServerUsage{
			CPUPerDoc:  time.Duration(pick(func(r *RunResult) float64 { return float64(r.ServerCPU) / float64(max(r.Documents, 1)) })),
			CPUPercent: pick(func(r *RunResult) float64 { return percentOf(r.ServerCPU, r.Elapsed) }),
		}
	}
	return s
}

func percentOf(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * cpu.Seconds() / wall.Seconds()
}

// median of v; the mean of the middle two for an even count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
