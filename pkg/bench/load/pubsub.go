package load

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// PubSubConfig is a pub/sub workload. Every subscriber has connected and
// subscribed, and a probe message has reached it through the broker,
// before the first publisher sends: so no message is published before its
// subscription is in effect, even where a broker applies subscriptions
// asynchronously.
type PubSubConfig struct {
	Workload string `json:"workload"`
	Addr     string `json:"addr"`
	// Pairs is the number of publisher → subscriber pairs (pairs).
	Pairs int `json:"pairs,omitempty"`
	// Subscribers is the number of subscribers of the one topic (fanout).
	Subscribers int `json:"subscribers,omitempty"`
	// QoS is the QoS of the publishes, SubQoS the one subscribed with.
	QoS         int  `json:"qos"`
	SubQoS      int  `json:"sub_qos"`
	Persistent  bool `json:"persistent"`
	PayloadSize int  `json:"payload_size"`
	Version     int  `json:"mqtt_version"`
	// Rate is the total publishes per second (open loop); 0 is closed
	// loop: Window messages per pair in flight from send to delivery.
	Rate     float64       `json:"rate,omitempty"`
	Window   int           `json:"window"`
	Duration time.Duration `json:"duration_ns"`
	Warmup   time.Duration `json:"warmup_ns"`
	// Drain bounds the wait for outstanding acks, and then for outstanding
	// deliveries, after the last send.
	Drain time.Duration `json:"drain_ns"`
	// Messages, when set, is the exact number of publishes per publisher.
	Messages int `json:"messages_per_publisher,omitempty"`
	// SubscribeTimeout bounds the wait for every subscription to be in
	// effect (probe messages delivered).
	SubscribeTimeout time.Duration `json:"subscribe_timeout_ns"`
	TopicPrefix      string        `json:"topic_prefix"`
	// Topic, when set (pairs only), is pair i's topic instead of
	// <TopicPrefix>/<run id>/<i>: %u stands for the pair's username, %r
	// for the run id, %i for i (e.g. devices/%u/pairs/%r, for rules that
	// confine each identity to its own topics).
	Topic        string        `json:"topic,omitempty"`
	ClientPrefix string        `json:"client_prefix"`
	Keepalive    time.Duration `json:"keepalive_ns"`
	Concurrency  int           `json:"connect_concurrency"`
	Username     string        `json:"username,omitempty"`
	Password     string        `json:"-"`
	// CredentialsFile, when set (pairs only), gives pair i's publisher and
	// subscriber the username and password of its line i
	// (ReadCredentialsFile) instead of Username and Password: one identity
	// per pair, as a device that reads back its own topics.
	CredentialsFile string `json:"credentials_file,omitempty"`
	ServerPID       int    `json:"server_pid,omitempty"`
}

// RegisterFlags registers the flags of c.Workload, which must be set
// before, with the target.
func (c *PubSubConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "Broker address host:port.")
	c.RegisterWorkloadFlags(fs)
	fs.IntVar(&c.ServerPID, "server-pid", 0, "PID of the broker process, to report its CPU time and RSS (same machine only).")
}

// RegisterWorkloadFlags registers the flags that describe the load of
// c.Workload (shared by the subcommand and compare).
func (c *PubSubConfig) RegisterWorkloadFlags(fs *flag.FlagSet) {
	if c.Workload == WorkloadFanout {
		fs.IntVar(&c.Subscribers, "subscribers", 1000, "Subscribers of the one topic.")
		fs.Float64Var(&c.Rate, "rate", 20, "Publishes per second (open loop, required); each is delivered to every subscriber.")
	} else {
		fs.IntVar(&c.Pairs, "pairs", 100, "Publisher → subscriber pairs, each on its own topic.")
		fs.Float64Var(&c.Rate, "rate", 0, "Open loop: total publishes per second over all pairs, on a fixed schedule; latency is measured from the scheduled time. 0 runs closed loop (see -window).")
	}
	fs.IntVar(&c.Window, "window", 16, "Closed loop: messages per pair in flight from send to delivery. Open loop: the cap on unacked publishes per publisher.")
	fs.IntVar(&c.QoS, "qos", 1, "QoS of the publishes: 0, 1 or 2.")
	fs.IntVar(&c.SubQoS, "sub-qos", 1, "QoS the subscribers subscribe with: 0 or 1.")
	fs.BoolVar(&c.Persistent, "persistent", false, "Persistent subscriber sessions (clean session off; MQTT 5: session expiry 5m) instead of clean ones. They are cleared after the run.")
	fs.IntVar(&c.PayloadSize, "size", 64, fmt.Sprintf("Payload size in bytes; at least %d (the stamp: publisher, sequence, send time).", stampSize))
	fs.IntVar(&c.Version, "mqtt-version", 4, "MQTT protocol level: 4 (3.1.1) or 5.")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "Length of the measured window.")
	fs.DurationVar(&c.Warmup, "warmup", 3*time.Second, "Load before the measured window; not counted.")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "After the last send, how long to wait for outstanding acks and then for outstanding deliveries (what is still missing then is lost).")
	fs.IntVar(&c.Messages, "messages", 0, "Send exactly this many publishes per publisher, then stop (duration becomes a limit, warmup is ignored).")
	fs.DurationVar(&c.SubscribeTimeout, "subscribe-timeout", 30*time.Second, "Bound on the wait for every subscription to deliver a probe message before the run.")
	fs.StringVar(&c.TopicPrefix, "topic-prefix", "bench", "Topics are <prefix>/<run id>/<pair> (fanout: <prefix>/<run id>/fanout).")
	if c.Workload == WorkloadPairs {
		fs.StringVar(&c.Topic, "topic", "", "Topic of pair i, instead of <topic-prefix>/<run id>/<i>: %u stands for the pair's username (-credentials-file), %r for the run id, %i for i (e.g. devices/%u/pairs/%r).")
		fs.StringVar(&c.CredentialsFile, "credentials-file", "", "File of username:password lines, one per pair: pair i's publisher and subscriber connect with line i (blank lines and # comments skipped), and each subscriber sends its own probe. Instead of -username and -password.")
	}
	fs.StringVar(&c.ClientPrefix, "client-prefix", "bench-"+c.Workload, "Client ids are <prefix>-<run id>-pub-<i> and -sub-<i>.")
	fs.DurationVar(&c.Keepalive, "keepalive", 60*time.Second, "Keep-alive announced in CONNECT.")
	fs.IntVar(&c.Concurrency, "connect-concurrency", 64, "Connections opened at once while setting up.")
	fs.StringVar(&c.Username, "username", "", "MQTT username (optional).")
	fs.StringVar(&c.Password, "password", "", "MQTT password (optional).")
}

// Validate names the bad field.
func (c *PubSubConfig) Validate() error {
	var errs []error
	switch c.Workload {
	case WorkloadPairs:
		if c.Pairs < 1 {
			errs = append(errs, errors.New("pairs: must be at least 1"))
		}
	case WorkloadFanout:
		if c.Subscribers < 1 {
			errs = append(errs, errors.New("subscribers: must be at least 1"))
		}
		if c.Rate <= 0 {
			errs = append(errs, errors.New("rate: fanout runs open loop, give a rate"))
		}
	default:
		errs = append(errs, fmt.Errorf("workload %q: must be %s or %s", c.Workload, WorkloadPairs, WorkloadFanout))
	}
	if c.SubQoS < 0 || c.SubQoS > 1 {
		errs = append(errs, errors.New("sub-qos: must be 0 or 1"))
	}
	if c.PayloadSize < stampSize {
		errs = append(errs, fmt.Errorf("size: must be at least %d", stampSize))
	}
	if c.SubscribeTimeout <= 0 {
		errs = append(errs, errors.New("subscribe-timeout: must be positive"))
	}
	if c.Workload != WorkloadPairs && (c.Topic != "" || c.CredentialsFile != "") {
		errs = append(errs, errors.New("topic, credentials-file: for the pairs workload only"))
	}
	if c.Topic != "" && !strings.Contains(c.Topic, "%i") && !strings.Contains(c.Topic, "%u") {
		errs = append(errs, fmt.Errorf("topic %q: must tell the pairs apart with %%i or %%u", c.Topic))
	}

	pc := c.pubConfig("x")
	if err := pc.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PublisherCount is the number of publishing connections.
func (c *PubSubConfig) PublisherCount() int {
	if c.Workload == WorkloadFanout {
		return 1
	}
	return c.Pairs
}

// SubscriberCount is the number of subscribing connections.
func (c *PubSubConfig) SubscriberCount() int {
	if c.Workload == WorkloadFanout {
		return c.Subscribers
	}
	return c.Pairs
}

// Mode describes the loop for reports.
func (c *PubSubConfig) Mode() string {
	if c.Rate > 0 {
		return fmt.Sprintf("open loop, %.0f msg/s total", c.Rate)
	}
	return fmt.Sprintf("closed loop, %d in flight end to end per pair", c.Window)
}

// SessionKind describes the subscriber sessions for reports.
func (c *PubSubConfig) SessionKind() string {
	if c.Persistent {
		return "persistent"
	}
	return "clean"
}

// pubConfig is the publishing half of the workload.
func (c *PubSubConfig) pubConfig(runID string) PubConfig {
	return PubConfig{
		Addr:         c.Addr,
		Publishers:   c.PublisherCount(),
		QoS:          c.QoS,
		PayloadSize:  c.PayloadSize,
		Version:      c.Version,
		Duration:     c.Duration,
		Warmup:       c.Warmup,
		Drain:        c.Drain,
		Window:       c.Window,
		Rate:         c.Rate,
		Messages:     c.Messages,
		TopicPrefix:  c.TopicPrefix,
		ClientPrefix: c.ClientPrefix + "-" + runID + "-pub",
		Keepalive:    c.Keepalive,
		Concurrency:  c.Concurrency,
		Username:     c.Username,
		Password:     c.Password,
		// Publisher i connects with line i, as subscriber i does.
		CredentialsFile: c.CredentialsFile,
		ServerPID:       c.ServerPID,
	}
}

// PubSubResult is what one pub/sub run measured. Deliveries count each
// message once per subscriber that received it.
type PubSubResult struct {
	Target string       `json:"target,omitempty"`
	Config PubSubConfig `json:"config"`
	RunID  string       `json:"run_id"`

	// Publish is the publishers' side: sends, acks, their latency and
	// errors.
	Publish *PubResult `json:"publish"`

	// ReadyAfter is how long the probes took to reach every subscriber.
	ReadyAfter time.Duration `json:"ready_after_ns"`
	// NotReady counts subscribers no probe reached in SubscribeTimeout.
	NotReady int `json:"not_ready"`

	Measured time.Duration `json:"measured_ns"`
	// Delivered counts first receipts in the measured window;
	// DeliveredPerSec is Delivered over Measured.
	Delivered       int64   `json:"delivered"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// Latency is from send (open loop: the scheduled send) to the first
	// receipt, for messages sent in the measured window.
	Latency measure.LatencySummary `json:"latency"`

	// Expected counts the deliveries owed over the whole run: every acked
	// publish (QoS 0: sent) once per subscriber of its topic.
	Expected int64 `json:"expected"`
	// Received counts first receipts over the whole run.
	Received int64 `json:"received"`
	// Lost counts expected deliveries that had not arrived when the drain
	// ended.
	Lost int64 `json:"lost"`
	// Duplicates counts receipts of a message the subscriber already had.
	Duplicates int64 `json:"duplicates"`
	// OutOfOrder counts first receipts of a message older than one the
	// subscriber already had from the same publisher.
	OutOfOrder int64 `json:"out_of_order"`
	// Foreign counts messages without a stamp or from a publisher the
	// subscriber does not listen to.
	Foreign int64 `json:"foreign"`

	// Subscriber errors over the whole run.
	SubConnectErrors   int64 `json:"sub_connect_errors"`
	SubscribeFailures  int64 `json:"subscribe_failures"`
	SubDisconnects     int64 `json:"sub_disconnects"`
	SessionsNotCleared int64 `json:"sessions_not_cleared,omitempty"`

	// Server is the broker's use in the measured window, per delivery.
	Server *measure.ProcessUsage `json:"server,omitempty"`
	// Bench is this process's (publishers and subscribers) use.
	Bench measure.ProcessUsage `json:"bench"`

	hist *measure.Histogram
}

// Errors sums every failure: the publishers', the subscribers', and the
// losses. Duplicates are allowed at QoS 1 and are not counted.
func (r *PubSubResult) Errors() int64 {
	var pub int64
	if r.Publish != nil {
		pub = r.Publish.Errors()
	}
	return pub + r.Lost + r.SubConnectErrors + r.SubscribeFailures + r.SubDisconnects + int64(r.NotReady)
}

// Histogram returns the end-to-end latency histogram.
func (r *PubSubResult) Histogram() *measure.Histogram { return r.hist }

var runCounter atomic.Int64

// newRunID returns an id that keeps the topics and client ids of two runs
// (and of two targets that are one broker) apart.
func newRunID() string {
	return strconv.FormatInt(time.Now().UnixNano()/int64(time.Millisecond)%(36*36*36*36*36), 36) +
		strconv.FormatInt(runCounter.Add(1), 36)
}

// RunPubSub runs a pub/sub workload against cfg.Addr. It fails when a
// subscriber or every publisher cannot connect or subscribe.
func RunPubSub(ctx context.Context, cfg PubSubConfig, hooks Hooks) (*PubSubResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Messages > 0 {
		cfg.Warmup = 0
	}
	runID := newRunID()
	nsubs, npubs := cfg.SubscriberCount(), cfg.PublisherCount()
	creds, err := resolveCredentials(nil, cfg.CredentialsFile, cfg.Username, cfg.Password, npubs)
	if err != nil {
		return nil, err
	}
	if user, _ := creds(0); user == "" && strings.Contains(cfg.Topic, "%u") {
		return nil, fmt.Errorf("topic %q: %%u needs -credentials-file or -username", cfg.Topic)
	}
	prefix := strings.TrimSuffix(cfg.TopicPrefix, "/") + "/" + runID
	topic := func(i int) string {
		switch {
		case cfg.Workload == WorkloadFanout:
			return prefix + "/fanout"
		case cfg.Topic != "":
			user, _ := creds(i)
			return strings.NewReplacer("%u", user, "%r", runID, "%i", strconv.Itoa(i)).Replace(cfg.Topic)
		}
		return fmt.Sprintf("%s/%d", prefix, i)
	}
	subs := make([]*subscriber, nsubs)
	for i := range subs {
		subs[i] = newSubscriber(&cfg, runID, i, topic)
		if cfg.CredentialsFile != "" {
			subs[i].opts.Username, subs[i].opts.Password = creds(i)
		}
	}
	// A subscriber of pairs frees slots of its own publisher's end-to-end
	// window.
	var ext pubExt
	ext.topic, ext.stamp = topic, true
	if cfg.Workload == WorkloadPairs && cfg.Rate == 0 {
		ext.slots = make([]chan struct{}, npubs)
		for i := range ext.slots {
			ext.slots[i] = make(chan struct{}, cfg.Window)
			subs[i].slots = ext.slots[i]
		}
	}
	clock := &runClock{}
	ext.started = func(t0 time.Time, mStart, mEnd int64) {
		clock.mStart, clock.mEnd = mStart, mEnd
		clock.t0.Store(&t0)
	}

	res := &PubSubResult{Config: cfg, RunID: runID}
	defer func() {
		for _, s := range subs {
			s.close()
		}
	}()
	if err := connectSubscribers(ctx, &cfg, subs, clock, res); err != nil {
		return nil, err
	}
	if hooks.Progress != nil {
		hooks.Progress(fmt.Sprintf("%d %s subscribers subscribed at qos %d to %s", nsubs, cfg.SessionKind(), cfg.SubQoS, cfg.Addr))
	}
	ready, err := probe(ctx, &cfg, runID, subs, topic)
	if err != nil {
		return nil, err
	}
	res.ReadyAfter = ready
	for _, s := range subs {
		if !s.ready.Load() {
			res.NotReady++
		}
	}
	if hooks.Progress != nil {
		hooks.Progress(fmt.Sprintf("probes reached %d/%d subscribers in %v", nsubs-res.NotReady, nsubs, ready.Round(time.Millisecond)))
	}

	pub, pubs, err := runPublish(ctx, cfg.pubConfig(runID), hooks, &ext)
	if err != nil {
		return nil, err
	}
	res.Publish = pub

	// Every acked publish is owed to each subscriber of its topic.
	fan := int64(1)
	if cfg.Workload == WorkloadFanout {
		fan = int64(nsubs)
	}
	for _, p := range pubs {
		res.Expected += fan * p.acked.len()
	}
	deadline := time.Now().Add(cfg.Drain)
	for clock.received.Load() < res.Expected && time.Now().Before(deadline) && ctx.Err() == nil {
		sleepUntil(ctx, time.Now().Add(20*time.Millisecond))
	}
	for _, s := range subs {
		s.close()
	}

	res.hist = measure.NewHistogram()
	for i, s := range subs {
		res.hist.Merge(s.hist)
		res.Delivered += s.delivered
		res.Received += s.received
		res.Duplicates += s.duplicates
		res.OutOfOrder += s.outOfOrder
		res.Foreign += s.foreign
		res.SubDisconnects += s.disconnects
		want := pubs[0]
		if cfg.Workload == WorkloadPairs {
			want = pubs[i]
		}
		res.Lost += s.seen(uint32(want.idx)).missingFrom(&want.acked)
	}
	res.Latency = res.hist.Summary()
	res.Measured = pub.Measured
	if cfg.Messages > 0 {
		res.Measured = time.Duration(clock.last.Load())
	}
	if res.Measured > 0 {
		res.DeliveredPerSec = float64(res.Delivered) / res.Measured.Seconds()
	}
	res.Bench = measure.Usage(pub.Bench.CPU, res.Measured, res.Delivered)
	if pub.Server != nil {
		u := measure.Usage(pub.Server.CPU, res.Measured, res.Delivered)
		u.RSS = pub.Server.RSS
		res.Server = &u
	}
	if cfg.Persistent {
		res.SessionsNotCleared = clearSessions(ctx, &cfg, subs)
	}
	return res, nil
}

// runClock is the run's clock as the subscribers see it: unset until the
// publishers are about to start.
type runClock struct {
	t0           atomic.Pointer[time.Time]
	mStart, mEnd int64        // written before t0 is stored
	received     atomic.Int64 // first receipts, all subscribers
	last         atomic.Int64 // latest first receipt, ns since t0
}

// connectSubscribers connects and subscribes every subscriber and starts
// its reader; one that cannot is an error of the whole run.
func connectSubscribers(ctx context.Context, cfg *PubSubConfig, subs []*subscriber, clock *runClock, res *PubSubResult) error {
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, s := range subs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := s.connect(ctx, cfg)
			if err == nil {
				go s.read(clock)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, ErrSubscribeRefused) {
				res.SubscribeFailures++
			} else {
				res.SubConnectErrors++
			}
			if len(errs) < 3 {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d subscribers could not connect, %d could not subscribe: %w",
			res.SubConnectErrors, res.SubscribeFailures, errors.Join(errs...))
	}
	return nil
}

// probe publishes a probe message to every topic, again every 250 ms to
// the topics whose subscribers have not all received one, until all have or
// SubscribeTimeout passed. It returns how long that took. With a
// credentials file each pair is an identity that may use only its own
// topics, so each subscriber sends its own probe (QoS 0: its reader takes
// no PUBACK); otherwise one probe client sends them all.
func probe(ctx context.Context, cfg *PubSubConfig, runID string, subs []*subscriber, topic func(int) string) (time.Duration, error) {
	start := time.Now()
	payload := makePayload(cfg.PayloadSize)
	stamp{pub: probePub}.put(payload)
	templates := map[string]*publishTemplate{}
	template := func(t string, qos byte) (*publishTemplate, error) {
		if templates[t] == nil {
			tmpl, err := newPublishTemplate(byte(cfg.Version), qos, t, payload)
			if err != nil {
				return nil, err
			}
			templates[t] = tmpl
		}
		return templates[t], nil
	}
	// send buffers the probe of subscriber i; flush sends the round.
	var send func(i int) error
	flush := func() error { return nil }
	if cfg.CredentialsFile != "" {
		send = func(i int) error {
			tmpl, err := template(topic(i), 0)
			if err == nil {
				err = subs[i].cl.writePublish(tmpl, 0)
			}
			if err == nil {
				err = subs[i].cl.Flush()
			}
			return err
		}
	} else {
		cl, err := Dial(ctx, cfg.Addr, ClientOptions{
			ClientID: cfg.ClientPrefix + "-" + runID + "-probe", Version: byte(cfg.Version),
			Keepalive: cfg.Keepalive, Username: cfg.Username, Password: cfg.Password,
		})
		if err != nil {
			return 0, fmt.Errorf("probe: %w", err)
		}
		// Acks are read and dropped; a lost probe is sent again anyway.
		go func() {
			for {
				if _, err := cl.ReadPacket(); err != nil {
					return
				}
			}
		}()
		defer func() { _ = cl.Disconnect() }()
		var pid uint16
		sent := map[string]bool{}
		send = func(i int) error {
			t := topic(i)
			if sent[t] {
				return nil // one probe per topic and round (fanout)
			}
			sent[t] = true
			tmpl, err := template(t, 1)
			if err != nil {
				return err
			}
			pid = pid%65535 + 1
			return cl.writePublish(tmpl, pid)
		}
		flush = func() error {
			clear(sent)
			return cl.Flush()
		}
	}
	deadline := start.Add(cfg.SubscribeTimeout)
	for {
		waiting := false
		for i, s := range subs {
			if s.ready.Load() {
				continue
			}
			waiting = true
			if err := send(i); err != nil {
				return 0, fmt.Errorf("probe: %w", err)
			}
		}
		if !waiting {
			return time.Since(start), nil
		}
		if err := flush(); err != nil {
			return 0, fmt.Errorf("probe: %w", err)
		}
		next := time.Now().Add(250 * time.Millisecond)
		for time.Now().Before(next) && !allReady(subs) {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			sleepUntil(ctx, time.Now().Add(5*time.Millisecond))
		}
		if time.Now().After(deadline) && !allReady(subs) {
			return time.Since(start), nil
		}
	}
}

func allReady(subs []*subscriber) bool {
	for _, s := range subs {
		if !s.ready.Load() {
			return false
		}
	}
	return true
}

// clearSessions ends the persistent sessions of the run (connect with a
// clean start, disconnect), so that brokers do not keep them; it returns
// how many could not be cleared.
func clearSessions(ctx context.Context, cfg *PubSubConfig, subs []*subscriber) int64 {
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, s := range subs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			opts := s.opts
			opts.Persistent = false
			cl, err := Dial(ctx, cfg.Addr, opts)
			if err != nil {
				failed.Add(1)
				return
			}
			_ = cl.Disconnect()
		}()
	}
	wg.Wait()
	return failed.Load()
}

// now is the time since t0, or false while the clock is not set (probe
// phase).
func (c *runClock) now() (int64, bool) {
	t0 := c.t0.Load()
	if t0 == nil {
		return 0, false
	}
	return int64(time.Since(*t0)), true
}

// inWindow reports whether ns since t0 falls in the measured window.
func (c *runClock) inWindow(at int64) bool { return at >= c.mStart && at < c.mEnd }

// noteLast moves the time of the latest receipt forward.
func (c *runClock) noteLast(now int64) {
	for {
		last := c.last.Load()
		if now <= last || c.last.CompareAndSwap(last, now) {
			return
		}
	}
}
