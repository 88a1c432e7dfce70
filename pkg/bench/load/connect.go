package load

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// ConnectConfig is the connect workload: Clients devices, each with a
// client id (and credentials) of its own, reconnect Concurrency at a time:
// each opens a TCP connection, sends CONNECT, waits for the CONNACK and
// leaves at once (DISCONNECT, close). Every device goes through
// WarmupPasses passes that are not counted, then Passes that are. Against
// a broker that remembers verified passwords, a warm-up pass fills its
// cache and the measured passes are the reconnects of known devices; the
// warm-up passes are reported too (the first one is the uncached rate).
type ConnectConfig struct {
	// TLS, when set, connects over TLS with it (set per target by
	// compare's tls=CAFILE, or from TLSCA by the standalone workload).
	TLS *tls.Config `json:"-"`
	// TLSCA is the standalone workload's -tls-ca (ClientTLS).
	TLSCA string `json:"tls_ca,omitempty"`
	// WebSocket is a path: MQTT over WebSocket to it (compare's ws=PATH,
	// the standalone workload's -ws-path).
	WebSocket      string        `json:"websocket,omitempty"`
	Addr           string        `json:"addr"`
	Clients        int           `json:"clients"`
	Concurrency    int           `json:"connect_concurrency"`
	Passes         int           `json:"passes"`
	WarmupPasses   int           `json:"warmup_passes"`
	Version        int           `json:"mqtt_version"`
	Keepalive      time.Duration `json:"keepalive_ns"`
	ConnectTimeout time.Duration `json:"connect_timeout_ns"`
	// Persistent makes every device keep its session (clean session 0 on
	// MQTT 3.1.1; clean start 0 with a session expiry on MQTT 5): after
	// the first pass each CONNECT resumes a session, the shape of a fleet
	// reconnecting after a load-balancer or node restart.
	Persistent bool `json:"persistent,omitempty"`
	// ResumeTLS gives each device a TLS session cache of its own, kept
	// across passes: after the first pass every device resumes its TLS
	// session (a ticket) instead of a full handshake, as devices whose TLS
	// stack keeps sessions do when they reconnect.
	ResumeTLS bool `json:"resume_tls,omitempty"`
	// Subscribe, when set, is a topic filter each device subscribes to
	// after its CONNACK ("%c" stands for its client id, "%u" for its
	// username), waiting for the
	// SUBACK before it leaves: the shape of devices with clean sessions,
	// which subscribe again at every CONNECT.
	Subscribe    string `json:"subscribe,omitempty"`
	ClientPrefix string `json:"client_prefix"`
	Username     string `json:"username,omitempty"`
	Password     string `json:"-"`
	// CredentialsFile and Credentials give device i its username and
	// password, as in PubConfig.
	CredentialsFile string      `json:"credentials_file,omitempty"`
	Credentials     Credentials `json:"-"`
	// ServerPID, when set, is sampled for CPU time and RSS around each
	// pass.
	ServerPID int `json:"server_pid,omitempty"`
}

// RegisterFlags registers the workload flags.
func (c *ConnectConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "Broker address host:port.")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "PID of the broker process, to report its CPU time per connect (same machine only).")
	fs.StringVar(&c.TLSCA, "tls-ca", "", tlsCAUsage)
	fs.StringVar(&c.WebSocket, "ws-path", "", wsPathUsage)
	c.RegisterWorkloadFlags(fs)
}

// RegisterWorkloadFlags registers the flags that describe the load, without
// the target (shared by connect and compare).
func (c *ConnectConfig) RegisterWorkloadFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Clients, "clients", 10000, "Devices, each with its own client id (and line of -credentials-file); each connects and disconnects once per pass.")
	fs.IntVar(&c.Concurrency, "connect-concurrency", 64, "Devices connecting at once.")
	fs.IntVar(&c.Passes, "passes", 1, "Measured passes over all devices.")
	fs.IntVar(&c.WarmupPasses, "warmup-passes", 0, "Passes over all devices before the measured ones, not counted (e.g. 1 to fill a broker's cache of verified passwords).")
	fs.IntVar(&c.Version, "mqtt-version", 4, "MQTT protocol level: 4 (3.1.1) or 5.")
	fs.DurationVar(&c.Keepalive, "keepalive", 60*time.Second, "Keep-alive announced in CONNECT.")
	fs.BoolVar(&c.ResumeTLS, "tls-resume", false, "Over TLS: each device keeps its TLS session (a session ticket) from one pass to the next and resumes it, instead of a full handshake per connection; use with -warmup-passes 1.")
	fs.BoolVar(&c.Persistent, "persistent", false, "Devices keep their sessions (clean session 0; on MQTT 5 clean start 0 and a session expiry): every CONNECT after the first pass resumes one.")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 30*time.Second, "Bound on dialling plus the CONNECT/CONNACK exchange of one device; one that takes longer counts as an error.")
	fs.StringVar(&c.Subscribe, "subscribe", "", "Topic filter each device subscribes to (QoS 1) after its CONNACK, waiting for the SUBACK before it disconnects; %c is its client id, %u its username (e.g. devices/%c/cmd/#, devices/%u/cmd/#). Empty: no SUBSCRIBE.")
	fs.StringVar(&c.ClientPrefix, "client-prefix", "bench-connect", "Client id of device i is <prefix>-<i>.")
	fs.StringVar(&c.Username, "username", "", "MQTT username of every device (optional).")
	fs.StringVar(&c.Password, "password", "", "MQTT password of every device (optional).")
	fs.StringVar(&c.CredentialsFile, "credentials-file", "", "File of username:password lines, one per device: device i connects with line i (blank lines and # comments skipped). Instead of -username and -password.")
}

// Validate names the bad field.
func (c *ConnectConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr: must not be empty"))
	}
	if c.WebSocket != "" && !strings.HasPrefix(c.WebSocket, "/") {
		errs = append(errs, errors.New("ws-path: must start with / (e.g. /mqtt)"))
	}
	if c.Clients < 1 {
		errs = append(errs, errors.New("clients: must be at least 1"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("connect-concurrency: must be at least 1"))
	}
	if c.Passes < 1 {
		errs = append(errs, errors.New("passes: must be at least 1"))
	}
	if c.WarmupPasses < 0 {
		errs = append(errs, errors.New("warmup-passes: must not be negative"))
	}
	if c.Version != 4 && c.Version != 5 {
		errs = append(errs, errors.New("mqtt-version: must be 4 or 5"))
	}
	if c.Keepalive < 0 {
		errs = append(errs, errors.New("keepalive: must not be negative"))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, errors.New("connect-timeout: must be positive"))
	}
	if c.CredentialsFile != "" && c.Username != "" {
		errs = append(errs, errors.New("credentials-file: give it or -username, not both"))
	}
	return errors.Join(errs...)
}

// ConnectPass is one pass over every device.
type ConnectPass struct {
	// Warmup is set for the passes that are not counted.
	Warmup bool `json:"warmup"`
	// Connected counts successful CONNACKs; Refused the CONNACKs with a
	// failure code, by code ("0x87"); Errors everything else (dial
	// failures, timeouts, a connection closed without CONNACK).
	Connected    int64            `json:"connected"`
	Refused      int64            `json:"refused"`
	RefusedCodes map[string]int64 `json:"refused_codes,omitempty"`
	Errors       int64            `json:"errors"`
	// Resumed counts the connections whose TLS handshake resumed an
	// earlier session (-tls-resume).
	Resumed int64 `json:"tls_resumed,omitempty"`
	// Wall is the pass from the first dial to the last close;
	// ConnectsPerSec is Connected over it.
	Wall           time.Duration `json:"wall_ns"`
	ConnectsPerSec float64       `json:"connects_per_sec"`
	// Connack is from CONNECT sent to CONNACK read, over the successful
	// connects.
	Connack measure.LatencySummary `json:"connack"`
	// Suback is from SUBSCRIBE sent to SUBACK read (with -subscribe).
	Suback measure.LatencySummary `json:"suback,omitzero"`
	// Server is the broker's CPU over the pass, per successful connect.
	Server *measure.ProcessUsage `json:"server,omitempty"`
	// Bench is this process's CPU over the pass, per successful connect.
	Bench measure.ProcessUsage `json:"bench"`

	hist, subHist *measure.Histogram
}

// ConnectResult is what one connect run measured: the measured passes
// together, and every pass on its own.
type ConnectResult struct {
	Target string        `json:"target,omitempty"`
	Config ConnectConfig `json:"config"`

	// Over the measured passes.
	Connected      int64                  `json:"connected"`
	Refused        int64                  `json:"refused"`
	RefusedCodes   map[string]int64       `json:"refused_codes,omitempty"`
	Errors         int64                  `json:"errors"`
	Measured       time.Duration          `json:"measured_ns"`
	ConnectsPerSec float64                `json:"connects_per_sec"`
	Connack        measure.LatencySummary `json:"connack"`
	Suback         measure.LatencySummary `json:"suback,omitzero"`
	Server         *measure.ProcessUsage  `json:"server,omitempty"`
	Bench          measure.ProcessUsage   `json:"bench"`
	// FirstError is the first failure of the run, if any (it names the
	// client id and the address, never a credential).
	FirstError string `json:"first_error,omitempty"`

	// Passes are all passes in order, warm-up passes first.
	Passes []ConnectPass `json:"passes"`

	hist, subHist *measure.Histogram
}

// Histogram returns the CONNACK latency histogram of the measured passes.
func (r *ConnectResult) Histogram() *measure.Histogram { return r.hist }

// Failures sums refusals and errors over the measured passes.
func (r *ConnectResult) Failures() int64 { return r.Refused + r.Errors }

// RunConnect runs the connect workload against cfg.Addr. It fails when no
// device connected in any pass.
func RunConnect(ctx context.Context, cfg ConnectConfig, hooks Hooks) (*ConnectResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	creds, err := resolveCredentials(cfg.Credentials, cfg.CredentialsFile, cfg.Username, cfg.Password, cfg.Clients)
	if err != nil {
		return nil, err
	}
	res := &ConnectResult{Config: cfg, hist: measure.NewHistogram()}
	var firstErr atomic.Pointer[error]
	total := cfg.WarmupPasses + cfg.Passes
	var anyConnected bool
	var hookWG sync.WaitGroup
	defer hookWG.Wait()
	var caches []tls.ClientSessionCache
	if cfg.ResumeTLS && cfg.TLS != nil {
		caches = make([]tls.ClientSessionCache, cfg.Clients)
		for i := range caches {
			caches[i] = tls.NewLRUClientSessionCache(1)
		}
	}
	for n := range total {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if n == cfg.WarmupPasses && hooks.MeasureStart != nil {
			// A pass has no fixed length: the hook (a CPU profile) picks
			// its own, from the start of the first measured pass.
			hookWG.Add(1)
			go func() {
				defer hookWG.Done()
				hooks.MeasureStart(ctx, time.Hour)
			}()
		}
		p := runConnectPass(ctx, &cfg, creds, caches, &firstErr)
		p.Warmup = n < cfg.WarmupPasses
		anyConnected = anyConnected || p.Connected > 0
		if hooks.Progress != nil {
			kind := "measured"
			if p.Warmup {
				kind = "warm-up"
			}
			resumed := ""
			if caches != nil {
				resumed = fmt.Sprintf(", %d TLS sessions resumed", p.Resumed)
			}
			hooks.Progress(fmt.Sprintf("pass %d/%d (%s): %d connected in %v, %.0f/s, connack p50 %s p99 %s, %d refused, %d errors%s",
				n+1, total, kind, p.Connected, p.Wall.Round(time.Millisecond), p.ConnectsPerSec,
				measure.FormatDuration(p.Connack.P50), measure.FormatDuration(p.Connack.P99), p.Refused, p.Errors, resumed))
		}
		res.Passes = append(res.Passes, p)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if e := firstErr.Load(); e != nil {
		res.FirstError = (*e).Error()
	}
	if !anyConnected {
		return nil, fmt.Errorf("no client could connect: %w", *firstErr.Load())
	}
	res.aggregate()
	return res, nil
}

// aggregate sums the measured passes into the result's headline figures.
func (r *ConnectResult) aggregate() {
	r.hist, r.subHist = measure.NewHistogram(), measure.NewHistogram()
	r.Connected, r.Refused, r.Errors, r.Measured = 0, 0, 0, 0
	r.RefusedCodes = nil
	var server, bench time.Duration
	serverOK := true
	measured := 0
	for _, p := range r.Passes {
		if p.Warmup {
			continue
		}
		measured++
		r.Connected += p.Connected
		r.Refused += p.Refused
		r.Errors += p.Errors
		r.Measured += p.Wall
		for code, n := range p.RefusedCodes {
			if r.RefusedCodes == nil {
				r.RefusedCodes = map[string]int64{}
			}
			r.RefusedCodes[code] += n
		}
		if p.hist != nil {
			r.hist.Merge(p.hist)
		}
		if p.subHist != nil {
			r.subHist.Merge(p.subHist)
		}
		bench += p.Bench.CPU
		if p.Server == nil {
			serverOK = false
		} else {
			server += p.Server.CPU
		}
	}
	r.Connack = r.hist.Summary()
	if r.subHist.Count() > 0 {
		r.Suback = r.subHist.Summary()
	}
	if r.Measured > 0 {
		r.ConnectsPerSec = float64(r.Connected) / r.Measured.Seconds()
	}
	r.Bench = measure.Usage(bench, r.Measured, r.Connected)
	r.Server = nil
	if serverOK && measured > 0 {
		u := measure.Usage(server, r.Measured, r.Connected)
		r.Server = &u
	}
}

// runConnectPass takes every device through one connect and disconnect,
// cfg.Concurrency at a time.
// With caches, device i keeps its TLS session in caches[i].
func runConnectPass(ctx context.Context, cfg *ConnectConfig, creds Credentials, caches []tls.ClientSessionCache, firstErr *atomic.Pointer[error]) ConnectPass {
	type worker struct {
		hist, subHist                       *measure.Histogram
		connected, refused, errors, resumed int64
		codes                               map[string]int64
	}
	workers := make([]worker, min(cfg.Concurrency, cfg.Clients))
	var next atomic.Int64
	before, benchBefore := measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wk := &workers[w]
		wk.hist, wk.subHist = measure.NewHistogram(), measure.NewHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.Clients {
					return
				}
				user, pass := creds(i)
				id := fmt.Sprintf("%s-%06d", cfg.ClientPrefix, i)
				tc := cfg.TLS
				if caches != nil {
					tc = tc.Clone()
					tc.ClientSessionCache = caches[i]
				}
				cl, err := Dial(ctx, cfg.Addr, ClientOptions{
					ClientID:       id,
					Version:        byte(cfg.Version),
					Keepalive:      cfg.Keepalive,
					Username:       user,
					Password:       pass,
					ConnectTimeout: cfg.ConnectTimeout,
					Persistent:     cfg.Persistent,
					SessionExpiry:  time.Hour,
					TLS:            tc,
					WebSocket:      cfg.WebSocket,
				})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					firstErr.CompareAndSwap(nil, &err)
					if refused, ok := errors.AsType[*RefusedError](err); ok {
						wk.refused++
						if wk.codes == nil {
							wk.codes = map[string]int64{}
						}
						wk.codes[fmt.Sprintf("0x%02x", refused.Code)]++
					} else {
						wk.errors++
					}
					continue
				}
				if cfg.Subscribe != "" {
					took, err := subscribeOnce(cl, deviceFilter(cfg.Subscribe, id, user), cfg.ConnectTimeout)
					if err != nil {
						_ = cl.Close()
						err = fmt.Errorf("%s: %w", id, err)
						firstErr.CompareAndSwap(nil, &err)
						wk.errors++
						continue
					}
					wk.subHist.Record(took)
				}
				wk.connected++
				if cl.TLSResumed() {
					wk.resumed++
				}
				wk.hist.Record(cl.ConnackLatency)
				_ = cl.Disconnect()
			}
		}()
	}
	wg.Wait()
	p := ConnectPass{Wall: time.Since(start), hist: measure.NewHistogram(), subHist: measure.NewHistogram()}
	after, benchAfter := measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
	for _, wk := range workers {
		p.Connected += wk.connected
		p.Resumed += wk.resumed
		p.Refused += wk.refused
		p.Errors += wk.errors
		for code, n := range wk.codes {
			if p.RefusedCodes == nil {
				p.RefusedCodes = map[string]int64{}
			}
			p.RefusedCodes[code] += n
		}
		p.hist.Merge(wk.hist)
		p.subHist.Merge(wk.subHist)
	}
	p.Connack = p.hist.Summary()
	if p.subHist.Count() > 0 {
		p.Suback = p.subHist.Summary()
	}
	if p.Wall > 0 {
		p.ConnectsPerSec = float64(p.Connected) / p.Wall.Seconds()
	}
	p.Bench = measure.Usage(benchAfter-benchBefore, p.Wall, p.Connected)
	if before.OK && after.OK {
		u := measure.Usage(after.CPU-before.CPU, p.Wall, p.Connected)
		u.RSS = after.RSS
		p.Server = &u
	}
	return p
}

// MergeConnect aggregates rounds of the connect workload against one
// target: the passes of every round in order, the measured ones summed.
func MergeConnect(rounds []*ConnectResult) *ConnectResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &ConnectResult{Target: rounds[0].Target, Config: rounds[0].Config}
	for _, r := range rounds {
		m.Passes = append(m.Passes, r.Passes...)
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
	}
	m.aggregate()
	return m
}

// subscribeOnce subscribes cl to filter at QoS 1 and waits for the SUBACK,
// acknowledging the QoS 1 messages that come first (a resumed session's),
// and returns how long the SUBACK took. A refusal in the SUBACK is an
// error.
func subscribeOnce(cl *Client, filter string, timeout time.Duration) (time.Duration, error) {
	_ = cl.conn.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = cl.conn.SetDeadline(time.Time{}) }()
	start := time.Now()
	err := cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: 1}},
	})
	if err == nil {
		err = cl.Flush()
	}
	for err == nil {
		var pk packets.Packet
		if pk, err = cl.ReadPacket(); err != nil {
			break
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			if pk.FixedHeader.Qos > 0 {
				err = cl.writePuback(pk.PacketID)
			}
		case packets.Suback:
			if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] >= packets.ErrUnspecifiedError.Code {
				return 0, fmt.Errorf("%w: %s: reason codes %x", ErrSubscribeRefused, filter, pk.ReasonCodes)
			}
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("subscribing to %s: %w", filter, err)
}

// deviceFilter is filter with %c replaced by the device's client id and %u
// by its username.
func deviceFilter(filter, clientID, username string) string {
	return strings.NewReplacer("%c", clientID, "%u", username).Replace(filter)
}
