package load

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// WorkloadRetained is a wildcard SUBSCRIBE over many retained messages: N
// retained messages are published to distinct topics, and once the broker
// has stored them all a fresh client subscribes to <prefix>/# and counts
// them in (retained*.go).
const WorkloadRetained = "retained"

// retainedStampSize is the length of the stamp at the start of every
// retained payload: magic, run, index.
const retainedStampSize = 12

// retainedMaxPublishers bounds the publishers: the probe subscribes to the
// last topic of each in one SUBSCRIBE, and a broker may bound the
// subscriptions of one session (fleetgate: session.max-subscriptions, 100).
const retainedMaxPublishers = 100

// RetainedConfig is the retained workload.
//
// Phase 1 publishes Messages retained QoS 1 messages, each to a topic of
// its own, <prefix>/<i/1000>/<i>, over Publishers connections with Window
// publishes in flight each; publisher p sends a contiguous range of
// indices in order. It then waits until the broker has stored them all: a
// probe client subscribes to the last topic of every publisher until each
// returns this run's message. That proves the whole range stored on a
// broker that stores one publisher's retained messages in the order they
// were published: mosquitto stores them before it answers; fleetgate's
// dispatcher stores them from Kafka, where a client's records are in one
// partition (the record key is the client id), routed in order.
//
// Phase 2: a fresh client subscribes to <prefix>/# and acknowledges every
// message at once, until all Messages have arrived or none came for
// IdleTimeout. Meanwhile the broker's RSS (ServerPID) and, for a Go broker
// with a Prometheus endpoint (MetricsAddr), its Go heap are sampled every
// SampleInterval.
//
// Every run overwrites the same topics, so repeated rounds do not grow the
// broker's store; the payload carries a run id, and a message of another
// run is counted apart (Foreign), not as one of this run's.
type RetainedConfig struct {
	Addr        string `json:"addr"`
	Messages    int    `json:"messages"`
	PayloadSize int    `json:"payload_size"`
	Publishers  int    `json:"publishers"`
	Window      int    `json:"window"`
	Version     int    `json:"mqtt_version"`
	// SubQoS is the QoS of the wildcard subscription (and so at most of
	// the messages it gets); the messages are published at QoS 1.
	SubQoS       int    `json:"sub_qos"`
	TopicPrefix  string `json:"topic_prefix"`
	ClientPrefix string `json:"client_prefix"`
	// StoreTimeout bounds the wait for the broker to have stored every
	// message after the last PUBACK.
	StoreTimeout time.Duration `json:"store_timeout_ns"`
	// PublishTimeout bounds phase 1 from the first send to the last
	// PUBACK.
	PublishTimeout time.Duration `json:"publish_timeout_ns"`
	// IdleTimeout ends phase 2 when no message arrived for this long: the
	// broker stopped short of Messages.
	IdleTimeout time.Duration `json:"idle_timeout_ns"`
	// ReceiveTimeout bounds phase 2 as a whole.
	ReceiveTimeout time.Duration `json:"receive_timeout_ns"`
	SampleInterval time.Duration `json:"sample_interval_ns"`
	Keepalive      time.Duration `json:"keepalive_ns"`
	Username       string        `json:"username,omitempty"`
	Password       string        `json:"-"`
	// ServerPID is the broker process whose RSS and CPU time are read.
	ServerPID int `json:"server_pid,omitempty"`
	// MetricsAddr is host:port (or a base URL) of the broker's Prometheus
	// /metrics, whose go_memstats_heap_alloc_bytes and
	// go_memstats_heap_inuse_bytes are sampled (fleetgate's operations
	// server, http.addr). Empty: no heap figures.
	MetricsAddr string `json:"metrics_addr,omitempty"`
}

// RegisterFlags registers the workload flags with the target.
func (c *RetainedConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "Broker address host:port.")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "PID of the broker process, for its peak RSS and CPU time during the wildcard SUBSCRIBE (same machine only).")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "host:port of a Go broker's Prometheus /metrics (fleetgate: http.addr), for its peak Go heap during the wildcard SUBSCRIBE.")
	c.RegisterWorkloadFlags(fs)
}

// RegisterWorkloadFlags registers the flags that describe the load, without
// the target (shared by retained and compare).
func (c *RetainedConfig) RegisterWorkloadFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Messages, "messages", 100000, "Retained messages, each on a topic of its own: <prefix>/<i/1000>/<i>.")
	fs.IntVar(&c.PayloadSize, "size", 64, fmt.Sprintf("Payload size in bytes; at least %d (the stamp: run, index).", retainedStampSize))
	fs.IntVar(&c.Publishers, "publishers", 10, fmt.Sprintf("Connections publishing the retained messages, each a contiguous range in order (at most %d).", retainedMaxPublishers))
	fs.IntVar(&c.Window, "window", 64, "QoS 1 publishes in flight per publisher (MQTT 5: at most the broker's Receive Maximum).")
	fs.IntVar(&c.Version, "mqtt-version", 4, "MQTT protocol level of every client: 4 (3.1.1) or 5.")
	fs.IntVar(&c.SubQoS, "sub-qos", 1, "QoS of the wildcard subscription: 0 or 1 (1: every message is acknowledged as it arrives).")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "bench-retained", "Topics are <prefix>/<i/1000>/<i>; the wildcard SUBSCRIBE is <prefix>/#. Every run overwrites the same topics.")
	fs.StringVar(&c.ClientPrefix, "client-prefix", "bench-retained", "Client ids are <prefix>-<run id>-pub-<p>, -probe-<n> and -sub.")
	fs.DurationVar(&c.PublishTimeout, "publish-timeout", 10*time.Minute, "Bound on publishing every message, first send to last PUBACK.")
	fs.DurationVar(&c.StoreTimeout, "store-timeout", 2*time.Minute, "Bound on the wait, after the last PUBACK, until the broker returns the last message of every publisher to a probe SUBSCRIBE.")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 10*time.Second, "The wildcard SUBSCRIBE ends when no message arrived for this long (the broker stopped short).")
	fs.DurationVar(&c.ReceiveTimeout, "receive-timeout", 10*time.Minute, "Bound on the wildcard SUBSCRIBE as a whole.")
	fs.DurationVar(&c.SampleInterval, "sample-interval", 50*time.Millisecond, "How often the broker's RSS and Go heap are read during the wildcard SUBSCRIBE.")
	fs.DurationVar(&c.Keepalive, "keepalive", 60*time.Second, "Keep-alive announced in CONNECT.")
	fs.StringVar(&c.Username, "username", "", "MQTT username of every client (optional).")
	fs.StringVar(&c.Password, "password", "", "MQTT password of every client (optional).")
}

// Validate names the bad field.
func (c *RetainedConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr: must not be empty"))
	}
	if c.Messages < 1 {
		errs = append(errs, errors.New("messages: must be at least 1"))
	}
	if c.PayloadSize < retainedStampSize {
		errs = append(errs, fmt.Errorf("size: must be at least %d", retainedStampSize))
	}
	if c.Publishers < 1 || c.Publishers > retainedMaxPublishers {
		errs = append(errs, fmt.Errorf("publishers: must be from 1 to %d", retainedMaxPublishers))
	}
	if c.Window < 1 || c.Window > 16384 {
		errs = append(errs, errors.New("window: must be from 1 to 16384"))
	}
	if c.Version != 4 && c.Version != 5 {
		errs = append(errs, errors.New("mqtt-version: must be 4 or 5"))
	}
	if c.SubQoS != 0 && c.SubQoS != 1 {
		errs = append(errs, errors.New("sub-qos: must be 0 or 1"))
	}
	if p := strings.TrimSuffix(c.TopicPrefix, "/"); p == "" || strings.ContainsAny(p, "#+") {
		errs = append(errs, errors.New("topic-prefix: must be a topic name without wildcards"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"publish-timeout", c.PublishTimeout}, {"store-timeout", c.StoreTimeout}, {"idle-timeout", c.IdleTimeout},
		{"receive-timeout", c.ReceiveTimeout}, {"sample-interval", c.SampleInterval}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive", d.name))
		}
	}
	if c.Keepalive < 0 {
		errs = append(errs, errors.New("keepalive: must not be negative"))
	}
	return errors.Join(errs...)
}

// topic returns the topic of message i.
func (c *RetainedConfig) topic(i int) string {
	return fmt.Sprintf("%s/%d/%d", strings.TrimSuffix(c.TopicPrefix, "/"), i/1000, i)
}

// filter is the wildcard filter of phase 2.
func (c *RetainedConfig) filter() string { return strings.TrimSuffix(c.TopicPrefix, "/") + "/#" }

// publisherRange returns the indices [lo, hi) publisher p sends.
func (c *RetainedConfig) publisherRange(p int) (lo, hi int) {
	return p * c.Messages / c.Publishers, (p + 1) * c.Messages / c.Publishers
}

// RetainedResult is what one retained run measured.
type RetainedResult struct {
	Target string         `json:"target,omitempty"`
	Config RetainedConfig `json:"config"`
	RunID  uint32         `json:"run_id"`
	// Rounds is how many runs this result holds (MergeRetained).
	Rounds int `json:"rounds"`

	// Phase 1: Published counts successful PUBACKs, PublishRefused those
	// with a failure code; PublishTime is from the first send to the last
	// PUBACK.
	Published      int64         `json:"published"`
	PublishRefused int64         `json:"publish_refused"`
	PublishTime    time.Duration `json:"publish_ns"`
	PublishPerSec  float64       `json:"publish_per_sec"`
	// StoredAfter is from the last PUBACK until a probe SUBSCRIBE returned
	// the last message of every publisher; ProbeAttempts the SUBSCRIBEs it
	// took.
	StoredAfter   time.Duration `json:"stored_after_ns"`
	ProbeAttempts int           `json:"probe_attempts"`

	// Phase 2, the wildcard SUBSCRIBE.
	RetainedReceive
}

// RetainedReceive is what the wildcard SUBSCRIBE measured.
type RetainedReceive struct {
	// Expected is Messages; Received counts every PUBLISH that arrived,
	// Unique the distinct messages of this run among them; Duplicates are
	// this run's messages that came again, Missing those that never came,
	// Foreign the PUBLISHes that were not this run's (another run's message
	// on one of the topics), NotRetained this run's messages that came
	// without the RETAIN flag [MQTT-3.3.1-8].
	Expected    int64 `json:"expected"`
	Received    int64 `json:"received"`
	Unique      int64 `json:"unique"`
	Duplicates  int64 `json:"duplicates"`
	Missing     int64 `json:"missing"`
	Foreign     int64 `json:"foreign"`
	NotRetained int64 `json:"not_retained"`
	// Complete is set when every message arrived; End says why phase 2
	// ended.
	Complete bool   `json:"complete"`
	End      string `json:"end"`
	// From SUBSCRIBE sent to the SUBACK, to the first message of this run
	// and to the last new one; PerSec is Unique over LastAfter.
	SubackAfter time.Duration `json:"suback_after_ns"`
	FirstAfter  time.Duration `json:"first_after_ns"`
	LastAfter   time.Duration `json:"last_after_ns"`
	PerSec      float64       `json:"messages_per_sec"`
	// Tenths are the times from SUBSCRIBE sent until 10 %, 20 %, ...
	// 100 % of Expected had arrived, as far as they did: where the stream
	// goes fast and where it waits.
	Tenths []time.Duration `json:"tenths_ns"`
	// Wall is from SUBSCRIBE sent to the end of phase 2: LastAfter when
	// every message arrived, else past it by the idle timeout.
	Wall time.Duration `json:"wall_ns"`

	// Memory of the broker during phase 2: the sample before the
	// SUBSCRIBE and the highest one until phase 2 ended. Zero where not
	// measured (no ServerPID, no MetricsAddr).
	Memory RetainedMemory `json:"memory"`
	// Server is the broker's CPU over Wall, per unique message; Bench
	// this process's.
	Server *measure.ProcessUsage `json:"server,omitempty"`
	Bench  measure.ProcessUsage  `json:"bench"`
}

// RetainedMemory is the broker's memory around the wildcard SUBSCRIBE.
type RetainedMemory struct {
	BaselineRSS int64 `json:"baseline_rss_bytes"`
	PeakRSS     int64 `json:"peak_rss_bytes"`
	RSSSamples  int   `json:"rss_samples"`
	// Go heap: go_memstats_heap_alloc_bytes (live and not yet swept
	// objects) and go_memstats_heap_inuse_bytes (spans in use).
	BaselineHeap      int64 `json:"baseline_heap_alloc_bytes"`
	PeakHeap          int64 `json:"peak_heap_alloc_bytes"`
	BaselineHeapInuse int64 `json:"baseline_heap_inuse_bytes"`
	PeakHeapInuse     int64 `json:"peak_heap_inuse_bytes"`
	// NextGC is go_memstats_next_gc_bytes, the heap size at which the
	// next collection ends a cycle: after each, the live heap it found
	// times 1 + GOGC/100. HeapAlloc peaks near it whatever the broker
	// holds; the peak goal tells the most the broker held live.
	BaselineNextGC int64 `json:"baseline_next_gc_bytes"`
	PeakNextGC     int64 `json:"peak_next_gc_bytes"`
	HeapSamples    int   `json:"heap_samples"`
	// SampleErrors counts failed reads; SampleError is the first.
	SampleErrors int    `json:"sample_errors"`
	SampleError  string `json:"sample_error,omitempty"`
}

// Reasons phase 2 ended (RetainedReceive.End).
const (
	retainedEndComplete = "every message arrived"
	retainedEndIdle     = "no message within the idle timeout"
	retainedEndTimeout  = "receive timeout"
)

// RunRetained runs both phases against cfg.Addr. It fails when a client
// cannot connect, the broker refuses the SUBSCRIBE, a publisher loses its
// connection, or the broker has not stored the messages within
// StoreTimeout; a wildcard SUBSCRIBE that gets fewer than Messages is a
// result (Missing), not an error.
func RunRetained(ctx context.Context, cfg RetainedConfig, hooks Hooks) (*RetainedResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	progress := hooks.Progress
	if progress == nil {
		progress = func(string) {}
	}
	res := &RetainedResult{Config: cfg, RunID: newRetainedRunID(), Rounds: 1}

	progress(fmt.Sprintf("publishing %d retained messages to %s over %d publishers, window %d", cfg.Messages, cfg.filter(), cfg.Publishers, cfg.Window))
	if err := publishRetained(ctx, &cfg, res, progress); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("%d acked (%d refused) in %v, %.0f/s; waiting until the broker has stored them",
		res.Published, res.PublishRefused, res.PublishTime.Round(time.Millisecond), res.PublishPerSec))
	if res.PublishRefused > 0 {
		return nil, fmt.Errorf("the broker refused %d of %d retained publishes", res.PublishRefused, cfg.Messages)
	}
	if err := waitRetainedStored(ctx, &cfg, res); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("stored %v after the last PUBACK (%d probe SUBSCRIBEs); subscribing to %s", res.StoredAfter.Round(time.Millisecond), res.ProbeAttempts, cfg.filter()))

	var hookWG sync.WaitGroup
	defer hookWG.Wait()
	startHook := func() {
		if hooks.MeasureStart == nil {
			return
		}
		// Phase 2 has no fixed length: the hook (a CPU profile) picks its
		// own.
		hookWG.Add(1)
		go func() {
			defer hookWG.Done()
			hooks.MeasureStart(ctx, time.Hour)
		}()
	}
	if err := receiveRetained(ctx, &cfg, res, startHook, progress); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("%d of %d in %v (suback %v, first %v), %.0f/s; duplicates %d, foreign %d; %s",
		res.Unique, res.Expected, res.LastAfter.Round(time.Millisecond), res.SubackAfter.Round(time.Millisecond),
		res.FirstAfter.Round(time.Millisecond), res.PerSec, res.Duplicates, res.Foreign, res.End))
	return res, nil
}

// MergeRetained aggregates rounds of the retained workload against one
// target: counts summed, times and rates the mean of the rounds, memory
// peaks the highest, baselines the mean. Complete only when every round
// was.
func MergeRetained(rounds []*RetainedResult) *RetainedResult {
	if len(rounds) == 0 {
		return nil
	}
	n := len(rounds)
	m := &RetainedResult{Target: rounds[0].Target, Config: rounds[0].Config, RunID: rounds[0].RunID, Rounds: n}
	m.Complete = true
	var server, bench, wall time.Duration
	serverOK := true
	mean := func(f func(*RetainedResult) time.Duration) time.Duration {
		var s time.Duration
		for _, r := range rounds {
			s += f(r)
		}
		return s / time.Duration(n)
	}
	meanInt := func(f func(*RetainedResult) int64) int64 {
		var s int64
		for _, r := range rounds {
			s += f(r)
		}
		return s / int64(n)
	}
	ends := map[string]bool{}
	for _, r := range rounds {
		m.Published += r.Published
		m.PublishRefused += r.PublishRefused
		m.ProbeAttempts += r.ProbeAttempts
		m.Expected += r.Expected
		m.Received += r.Received
		m.Unique += r.Unique
		m.Duplicates += r.Duplicates
		m.Missing += r.Missing
		m.Foreign += r.Foreign
		m.NotRetained += r.NotRetained
		m.Complete = m.Complete && r.Complete
		if !ends[r.End] {
			ends[r.End] = true
			m.End = strings.TrimPrefix(m.End+"; "+r.End, "; ")
		}
		m.PublishPerSec += r.PublishPerSec / float64(n)
		m.PerSec += r.PerSec / float64(n)
		mm, rm := &m.Memory, &r.Memory
		mm.PeakRSS = max(mm.PeakRSS, rm.PeakRSS)
		mm.PeakHeap = max(mm.PeakHeap, rm.PeakHeap)
		mm.PeakHeapInuse = max(mm.PeakHeapInuse, rm.PeakHeapInuse)
		mm.PeakNextGC = max(mm.PeakNextGC, rm.PeakNextGC)
		mm.RSSSamples += rm.RSSSamples
		mm.HeapSamples += rm.HeapSamples
		mm.SampleErrors += rm.SampleErrors
		if mm.SampleError == "" {
			mm.SampleError = rm.SampleError
		}
		bench += r.Bench.CPU
		wall += r.Wall
		if r.Server == nil {
			serverOK = false
		} else {
			server += r.Server.CPU
		}
	}
	m.PublishTime = mean(func(r *RetainedResult) time.Duration { return r.PublishTime })
	m.StoredAfter = mean(func(r *RetainedResult) time.Duration { return r.StoredAfter })
	m.SubackAfter = mean(func(r *RetainedResult) time.Duration { return r.SubackAfter })
	m.FirstAfter = mean(func(r *RetainedResult) time.Duration { return r.FirstAfter })
	m.LastAfter = mean(func(r *RetainedResult) time.Duration { return r.LastAfter })
	m.Tenths = meanTenths(rounds)
	m.Memory.BaselineRSS = meanInt(func(r *RetainedResult) int64 { return r.Memory.BaselineRSS })
	m.Memory.BaselineHeap = meanInt(func(r *RetainedResult) int64 { return r.Memory.BaselineHeap })
	m.Memory.BaselineHeapInuse = meanInt(func(r *RetainedResult) int64 { return r.Memory.BaselineHeapInuse })
	m.Memory.BaselineNextGC = meanInt(func(r *RetainedResult) int64 { return r.Memory.BaselineNextGC })
	m.Wall = mean(func(r *RetainedResult) time.Duration { return r.Wall })
	m.Bench = measure.Usage(bench, wall, m.Unique)
	if serverOK {
		u := measure.Usage(server, wall, m.Unique)
		m.Server = &u
	}
	return m
}

// meanTenths is the mean of each tenth the rounds all reached.
func meanTenths(rounds []*RetainedResult) []time.Duration {
	n := len(rounds[0].Tenths)
	for _, r := range rounds {
		n = min(n, len(r.Tenths))
	}
	out := make([]time.Duration, n)
	for i := range out {
		for _, r := range rounds {
			out[i] += r.Tenths[i] / time.Duration(len(rounds))
		}
	}
	return out
}
