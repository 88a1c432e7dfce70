package load

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// PubConfig is the publish workload: Publishers connections each sending
// PUBLISHes of PayloadSize bytes at QoS, either closed loop (Window publishes
// in flight per publisher, the next sent as soon as an ack frees a slot) or
// open loop (Rate messages per second in total, on a fixed schedule).
type PubConfig struct {
	// TLS, when set, connects over TLS with it (set per target by
	// compare's tls=CAFILE, or from TLSCA by the standalone workload).
	TLS *tls.Config `json:"-"`
	// TLSCA is the standalone workload's -tls-ca (ClientTLS).
	TLSCA string `json:"tls_ca,omitempty"`
	// WebSocket is a path: MQTT over WebSocket to it (compare's ws=PATH,
	// the standalone workload's -ws-path).
	WebSocket    string        `json:"websocket,omitempty"`
	Addr         string        `json:"addr"`
	Publishers   int           `json:"publishers"`
	QoS          int           `json:"qos"`
	PayloadSize  int           `json:"payload_size"`
	Version      int           `json:"mqtt_version"`
	Duration     time.Duration `json:"duration_ns"`
	Warmup       time.Duration `json:"warmup_ns"`
	Drain        time.Duration `json:"drain_ns"`
	Window       int           `json:"window"`
	Rate         float64       `json:"rate,omitempty"`
	Messages     int           `json:"messages_per_publisher,omitempty"`
	TopicPrefix  string        `json:"topic_prefix"`
	ClientPrefix string        `json:"client_prefix"`
	Keepalive    time.Duration `json:"keepalive_ns"`
	Concurrency  int           `json:"connect_concurrency"`
	// Topic, when set, is the topic of publisher i instead of
	// <TopicPrefix>/<i>: %u stands for its username, %i for i.
	Topic    string `json:"topic,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"-"`
	// CredentialsFile, when set, gives publisher i the username and
	// password of its line i (ReadCredentialsFile) instead of Username and
	// Password.
	CredentialsFile string `json:"credentials_file,omitempty"`
	// Credentials, when set, gives publisher i its username and password;
	// it overrides CredentialsFile, Username and Password.
	Credentials Credentials `json:"-"`
	// ServerPID, when set, is sampled for CPU time and RSS.
	ServerPID int `json:"server_pid,omitempty"`
}

// RegisterFlags registers the workload flags.
func (c *PubConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "Broker address host:port.")
	c.RegisterWorkloadFlags(fs)
	fs.IntVar(&c.ServerPID, "server-pid", 0, "PID of the broker process, to report its CPU time and RSS (same machine only).")
	fs.StringVar(&c.TLSCA, "tls-ca", "", tlsCAUsage)
	fs.StringVar(&c.WebSocket, "ws-path", "", wsPathUsage)
}

// RegisterWorkloadFlags registers the flags that describe the load, without
// the target (shared by pub and compare).
func (c *PubConfig) RegisterWorkloadFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Publishers, "publishers", 100, "Number of publishing connections (distinct client ids).")
	fs.IntVar(&c.QoS, "qos", 1, "QoS of the publishes: 0, 1 or 2.")
	fs.IntVar(&c.PayloadSize, "size", 64, "Payload size in bytes.")
	fs.IntVar(&c.Version, "mqtt-version", 4, "MQTT protocol level: 4 (3.1.1) or 5.")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "Length of the measured window.")
	fs.DurationVar(&c.Warmup, "warmup", 3*time.Second, "Load before the measured window; not counted.")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "After the run, how long to wait for outstanding acks before disconnecting (they count as unacked).")
	fs.IntVar(&c.Window, "window", 16, "Closed loop: publishes in flight per publisher. Open loop: the cap on them (set it high so it does not throttle). MQTT 5: never above the broker's Receive Maximum.")
	fs.Float64Var(&c.Rate, "rate", 0, "Open loop: total publishes per second over all publishers, on a fixed schedule; latency is measured from the scheduled time (no coordinated omission). 0 runs closed loop.")
	fs.IntVar(&c.Messages, "messages", 0, "Send exactly this many publishes per publisher, then stop (duration becomes a limit, warmup is ignored).")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "bench", "Topic of publisher i is <prefix>/<i>.")
	fs.StringVar(&c.Topic, "topic", "", "Topic of publisher i, instead of <topic-prefix>/<i>: %u stands for its username, %i for i (e.g. devices/%u/telemetry, for rules that let each identity publish below its own name).")
	fs.StringVar(&c.ClientPrefix, "client-prefix", "bench-pub", "Client id of publisher i is <prefix>-<i>.")
	fs.DurationVar(&c.Keepalive, "keepalive", 60*time.Second, "Keep-alive announced in CONNECT.")
	fs.IntVar(&c.Concurrency, "connect-concurrency", 64, "Connections opened at once while setting up.")
	fs.StringVar(&c.Username, "username", "", "MQTT username (optional).")
	fs.StringVar(&c.Password, "password", "", "MQTT password (optional).")
	fs.StringVar(&c.CredentialsFile, "credentials-file", "", "File of username:password lines, one per publisher: publisher i connects with line i (blank lines and # comments skipped). Instead of -username and -password.")
}

// Validate names the bad field.
func (c *PubConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr: must not be empty"))
	}
	if c.WebSocket != "" && !strings.HasPrefix(c.WebSocket, "/") {
		errs = append(errs, errors.New("ws-path: must start with / (e.g. /mqtt)"))
	}
	if c.Publishers < 1 {
		errs = append(errs, errors.New("publishers: must be at least 1"))
	}
	if c.QoS < 0 || c.QoS > 2 {
		errs = append(errs, errors.New("qos: must be 0, 1 or 2"))
	}
	if c.PayloadSize < 0 || c.PayloadSize > 256<<20 {
		errs = append(errs, errors.New("size: must be between 0 and 256 MiB"))
	}
	if c.Version != 4 && c.Version != 5 {
		errs = append(errs, errors.New("mqtt-version: must be 4 or 5"))
	}
	if c.Duration <= 0 {
		errs = append(errs, errors.New("duration: must be positive"))
	}
	if c.Warmup < 0 || c.Drain < 0 {
		errs = append(errs, errors.New("warmup, drain: must not be negative"))
	}
	if c.Window < 1 || c.Window > 32767 {
		errs = append(errs, errors.New("window: must be between 1 and 32767"))
	}
	if c.Rate < 0 || math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate) {
		errs = append(errs, errors.New("rate: must be a non-negative number"))
	}
	if c.Messages < 0 {
		errs = append(errs, errors.New("messages: must not be negative"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("connect-concurrency: must be at least 1"))
	}
	if c.CredentialsFile != "" && c.Username != "" {
		errs = append(errs, errors.New("credentials-file: give it or -username, not both"))
	}
	return errors.Join(errs...)
}

// OpenLoop reports whether publishes follow a fixed schedule.
func (c *PubConfig) OpenLoop() bool { return c.Rate > 0 }

// Mode describes the loop for reports.
func (c *PubConfig) Mode() string {
	if c.OpenLoop() {
		return fmt.Sprintf("open loop, %.0f msg/s total", c.Rate)
	}
	if c.QoS == 0 {
		return "closed loop, as fast as the socket takes them"
	}
	return fmt.Sprintf("closed loop, window %d per publisher", c.Window)
}

// PubResult is what one publish run measured. Counts are within the
// measured window unless their name says otherwise.
type PubResult struct {
	Target string    `json:"target,omitempty"`
	Config PubConfig `json:"config"`

	Measured time.Duration `json:"measured_ns"`
	// Sent counts publishes written (scheduled, in open loop) in the window.
	Sent int64 `json:"sent"`
	// Acked counts successful PUBACKs (QoS 1) or PUBCOMPs (QoS 2) received
	// in the window.
	Acked int64 `json:"acked"`
	// SentPerSec and AckedPerSec are Sent and Acked over Measured.
	SentPerSec  float64 `json:"sent_per_sec"`
	AckedPerSec float64 `json:"acked_per_sec"`
	// Latency is from send (open loop: the scheduled send) to the final
	// ack, for publishes sent in the window.
	Latency measure.LatencySummary `json:"latency"`

	// Errors over the whole run.
	NegativeAcks  int64 `json:"negative_acks"`
	Disconnects   int64 `json:"disconnects"`
	ConnectErrors int64 `json:"connect_errors"`
	// Unacked counts publishes never answered: lost with a connection or
	// still outstanding when the drain ended.
	Unacked int64 `json:"unacked"`
	// UnknownAcks counts acks for packet ids not in flight (a broker bug).
	UnknownAcks int64 `json:"unknown_acks"`
	// TotalAcked counts successful acks over the whole run, warm-up and
	// drain included.
	TotalAcked int64 `json:"total_acked"`

	// Server is the broker process's use in the window, when its pid is
	// known.
	Server *measure.ProcessUsage `json:"server,omitempty"`
	// Bench is this process's CPU use in the window: the load generator
	// shares the machine with the broker.
	Bench measure.ProcessUsage `json:"bench"`

	hist *measure.Histogram
}

// Throughput is acks per second, or sends per second for QoS 0 (which has
// no ack).
func (r *PubResult) Throughput() float64 {
	if r.Config.QoS == 0 {
		return r.SentPerSec
	}
	return r.AckedPerSec
}

// Errors sums every kind of failure.
func (r *PubResult) Errors() int64 {
	return r.NegativeAcks + r.Disconnects + r.ConnectErrors + r.Unacked + r.UnknownAcks
}

// Histogram returns the latency histogram (nil for QoS 0).
func (r *PubResult) Histogram() *measure.Histogram { return r.hist }

// Hooks lets a caller act during a run.
type Hooks struct {
	// MeasureStart, when set, runs in its own goroutine when the measured
	// window opens; the run returns only after it did.
	MeasureStart func(ctx context.Context, window time.Duration)
	// Progress, when set, receives one line of progress now and then.
	Progress func(msg string)
}

// pubExt turns the publish workload into the publishing half of a pub/sub
// workload (pubsub.go).
type pubExt struct {
	// topic names publisher idx's topic instead of <prefix>/<idx>.
	topic func(idx int) string
	// stamp writes a stamp (publisher, sequence, send time) over the start
	// of every payload and records which sequence numbers were acked.
	stamp bool
	// slots, when set in closed loop, hold one window per publisher of
	// messages in flight from send to delivery: a send takes a slot, the
	// subscriber that receives the message gives it back.
	slots []chan struct{}
	// started runs once the clock of the run is set, before anything is
	// sent; stamps and windows are in ns since t0.
	started func(t0 time.Time, mStart, mEnd int64)
}

// pubRun is the state shared by the publishers of one run.
type pubRun struct {
	ext     *pubExt // nil for the plain publish workload
	cfg     PubConfig
	creds   Credentials
	payload []byte
	t0      time.Time
	mStart  int64 // measured window, ns since t0
	mEnd    int64

	sent, acked, totalAcked   atomic.Int64
	nacks, disconnects        atomic.Int64
	connectErrors, unacked    atomic.Int64
	unknownAcks, lastActivity atomic.Int64
}

// touch moves the time of the last send or ack forward: in messages mode
// the run's length is measured up to it.
func (r *pubRun) touch(now int64) {
	if r.cfg.Messages == 0 {
		return
	}
	for {
		last := r.lastActivity.Load()
		if now <= last || r.lastActivity.CompareAndSwap(last, now) {
			return
		}
	}
}

// RunPublish runs the publish workload against cfg.Addr and returns what it
// measured. It fails only when no publisher could connect at all.
func RunPublish(ctx context.Context, cfg PubConfig, hooks Hooks) (*PubResult, error) {
	res, _, err := runPublish(ctx, cfg, hooks, nil)
	return res, err
}

func runPublish(ctx context.Context, cfg PubConfig, hooks Hooks, ext *pubExt) (*PubResult, []*publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if cfg.Messages > 0 {
		cfg.Warmup = 0
	}
	creds, err := resolveCredentials(cfg.Credentials, cfg.CredentialsFile, cfg.Username, cfg.Password, cfg.Publishers)
	if err != nil {
		return nil, nil, err
	}
	r := &pubRun{cfg: cfg, ext: ext, creds: creds, payload: makePayload(cfg.PayloadSize)}
	pubs := make([]*publisher, cfg.Publishers)
	for i := range pubs {
		p, err := newPublisher(r, i)
		if err != nil {
			return nil, nil, err
		}
		pubs[i] = p
	}

	// Connect everyone first, so that set-up is not measured.
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for _, p := range pubs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := Dial(ctx, cfg.Addr, p.opts)
			if err != nil {
				r.connectErrors.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			p.cl = cl
		}()
	}
	wg.Wait()
	if n := r.connectErrors.Load(); n == int64(len(pubs)) {
		return nil, nil, fmt.Errorf("no publisher could connect: %w", *firstErr.Load())
	}
	if hooks.Progress != nil {
		hooks.Progress(fmt.Sprintf("%d publishers connected to %s; %s, qos %d, %d-byte payloads", int64(len(pubs))-r.connectErrors.Load(), cfg.Addr, cfg.Mode(), cfg.QoS, cfg.PayloadSize))
	}

	r.t0 = time.Now()
	r.mStart = int64(cfg.Warmup)
	r.mEnd = int64(cfg.Warmup + cfg.Duration)
	if cfg.Messages > 0 {
		r.mEnd = math.MaxInt64
	}
	if ext != nil && ext.started != nil {
		ext.started(r.t0, r.mStart, r.mEnd)
	}
	sendCtx, stopSending := context.WithDeadline(ctx, r.t0.Add(cfg.Warmup+cfg.Duration))
	defer stopSending()

	// Sample the processes at the edges of the window.
	var before, after measure.ProcessSample
	var benchBefore, benchAfter time.Duration
	var samplerWG sync.WaitGroup
	samplerWG.Add(1)
	go func() {
		defer samplerWG.Done()
		sleepUntil(ctx, r.t0.Add(cfg.Warmup))
		before, benchBefore = measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
		if hooks.MeasureStart != nil && cfg.Messages == 0 {
			samplerWG.Add(1)
			go func() {
				defer samplerWG.Done()
				hooks.MeasureStart(ctx, cfg.Duration)
			}()
		}
		if cfg.Messages > 0 {
			return // sampled again when the publishers are done
		}
		sleepUntil(ctx, r.t0.Add(cfg.Warmup+cfg.Duration))
		after, benchAfter = measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
	}()

	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx, sendCtx)
		}()
	}
	wg.Wait()
	measured := cfg.Duration
	if cfg.Messages > 0 {
		measured = time.Duration(r.lastActivity.Load())
		after, benchAfter = measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
	}
	samplerWG.Wait()

	res := &PubResult{
		Config:        cfg,
		Measured:      measured,
		Sent:          r.sent.Load(),
		Acked:         r.acked.Load(),
		NegativeAcks:  r.nacks.Load(),
		Disconnects:   r.disconnects.Load(),
		ConnectErrors: r.connectErrors.Load(),
		Unacked:       r.unacked.Load(),
		UnknownAcks:   r.unknownAcks.Load(),
		TotalAcked:    r.totalAcked.Load(),
	}
	if cfg.QoS > 0 {
		res.hist = measure.NewHistogram()
		for _, p := range pubs {
			res.hist.Merge(p.hist)
		}
		res.Latency = res.hist.Summary()
	}
	if measured > 0 {
		res.SentPerSec = float64(res.Sent) / measured.Seconds()
		res.AckedPerSec = float64(res.Acked) / measured.Seconds()
	}
	msgs := res.Acked
	if cfg.QoS == 0 {
		msgs = res.Sent
	}
	res.Bench = measure.Usage(benchAfter-benchBefore, measured, msgs)
	if before.OK && after.OK {
		u := measure.Usage(after.CPU-before.CPU, measured, msgs)
		u.RSS = after.RSS
		res.Server = &u
	}
	return res, pubs, nil
}

// makePayload returns size printable bytes.
func makePayload(size int) []byte {
	const alphabet = "fleetgate-benchmark-payload-0123456789"
	b := make([]byte, size)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}

// sleepUntil waits until t or ctx ends.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
