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

// IdleConfig is the idle-connection workload: Clients connections that
// connect and then stay silent, to measure the broker's memory per
// connection.
type IdleConfig struct {
	// TLS, when set, connects over TLS with it (set per target by
	// compare's tls=CAFILE, or from TLSCA by the standalone workload).
	TLS *tls.Config `json:"-"`
	// TLSCA is the standalone workload's -tls-ca (ClientTLS).
	TLSCA string `json:"tls_ca,omitempty"`
	// WebSocket is a path: MQTT over WebSocket to it (compare's ws=PATH,
	// the standalone workload's -ws-path).
	WebSocket    string        `json:"websocket,omitempty"`
	Addr         string        `json:"addr"`
	Clients      int           `json:"clients"`
	Version      int           `json:"mqtt_version"`
	Keepalive    time.Duration `json:"keepalive_ns"`
	Concurrency  int           `json:"connect_concurrency"`
	Settle       time.Duration `json:"settle_ns"`
	ClientPrefix string        `json:"client_prefix"`
	Username     string        `json:"username,omitempty"`
	Password     string        `json:"-"`
	// CredentialsFile and Credentials give connection i its username and
	// password, as in PubConfig.
	CredentialsFile string      `json:"credentials_file,omitempty"`
	Credentials     Credentials `json:"-"`
	// ServerPID is the broker process whose RSS is read; without it only
	// the connections are made.
	ServerPID int `json:"server_pid,omitempty"`
	// Burst is how many QoS 1 messages each connection publishes back to
	// back after its CONNACK (waiting for their PUBACKs) before it goes
	// silent: a device that reports in bursts and then sleeps. 0: none.
	Burst int `json:"burst,omitempty"`
	// BurstTopic is the burst's topic; %c is the client id, %u the
	// username.
	BurstTopic string `json:"burst_topic,omitempty"`
	// WSPing, over WebSocket, is how often each connection sends a
	// WebSocket ping while it is otherwise silent (as some WebSocket
	// libraries do on their own), spread over the interval; 0: never.
	WSPing time.Duration `json:"ws_ping_ns,omitempty"`
}

// RegisterFlags registers the workload flags.
func (c *IdleConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "Broker address host:port.")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "PID of the broker process whose RSS (VmRSS) is measured; same machine only.")
	fs.StringVar(&c.TLSCA, "tls-ca", "", tlsCAUsage)
	fs.StringVar(&c.WebSocket, "ws-path", "", wsPathUsage)
	c.RegisterWorkloadFlags(fs)
}

// RegisterWorkloadFlags registers the flags that describe the load, without
// the target (shared by idle and compare).
func (c *IdleConfig) RegisterWorkloadFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Clients, "clients", 5000, "Idle connections to open.")
	fs.IntVar(&c.Version, "mqtt-version", 4, "MQTT protocol level: 4 (3.1.1) or 5.")
	fs.DurationVar(&c.Keepalive, "keepalive", 300*time.Second, "Keep-alive announced in CONNECT (at least 60s, so no PINGREQ is due while measuring).")
	fs.IntVar(&c.Concurrency, "connect-concurrency", 64, "Connections opened at once.")
	fs.DurationVar(&c.Settle, "settle", 5*time.Second, "After the last CONNACK, how long to let the broker settle before reading its RSS (sampled every 250ms; the last sample counts). A Go broker's idle RSS keeps moving with its garbage collection: settle past 2m (Go's forced GC period) for its steady state.")
	fs.StringVar(&c.ClientPrefix, "client-prefix", "bench-idle", "Client id of connection i is <prefix>-<i>.")
	fs.StringVar(&c.Username, "username", "", "MQTT username (optional).")
	fs.StringVar(&c.Password, "password", "", "MQTT password (optional).")
	fs.StringVar(&c.CredentialsFile, "credentials-file", "", "File of username:password lines, one per connection: connection i connects with line i (blank lines and # comments skipped). Instead of -username and -password.")
	fs.IntVar(&c.Burst, "burst", 0, "QoS 1 messages (64 bytes) each connection publishes back to back after its CONNACK, waiting for their PUBACKs, before it goes silent: devices that report in bursts and sleep. 0: they only connect.")
	fs.StringVar(&c.BurstTopic, "burst-topic", "bench/idle/%c", "Topic of the burst's messages; %c is the client id, %u the username (e.g. devices/%u/telemetry).")
	fs.DurationVar(&c.WSPing, "ws-ping", 0, "Over WebSocket: each connection sends a WebSocket ping this often while silent (as some WebSocket libraries do on their own), spread over the interval. 0: never.")
}

// Validate names the bad field.
func (c *IdleConfig) Validate() error {
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
	if c.Version != 4 && c.Version != 5 {
		errs = append(errs, errors.New("mqtt-version: must be 4 or 5"))
	}
	if c.Keepalive < 60*time.Second {
		errs = append(errs, errors.New("keepalive: must be at least 60s"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("connect-concurrency: must be at least 1"))
	}
	if c.Settle < 0 {
		errs = append(errs, errors.New("settle: must not be negative"))
	}
	if c.CredentialsFile != "" && c.Username != "" {
		errs = append(errs, errors.New("credentials-file: give it or -username, not both"))
	}
	if c.Burst < 0 || c.Burst > 1000 {
		errs = append(errs, errors.New("burst: must be 0 to 1000"))
	}
	if c.Burst > 0 && c.BurstTopic == "" {
		errs = append(errs, errors.New("burst-topic: must not be empty with -burst"))
	}
	if c.WSPing < 0 {
		errs = append(errs, errors.New("ws-ping: must not be negative"))
	}
	if c.WSPing > 0 && c.WebSocket == "" {
		errs = append(errs, errors.New("ws-ping: needs MQTT over WebSocket (-ws-path, or compare's ws=PATH)"))
	}
	return errors.Join(errs...)
}

// IdleResult is what one idle run measured.
type IdleResult struct {
	Target string     `json:"target,omitempty"`
	Config IdleConfig `json:"config"`

	Connected     int           `json:"connected"`
	ConnectErrors int           `json:"connect_errors"`
	ConnectTime   time.Duration `json:"connect_time_ns"`
	// Alive counts connections that still answered PINGREQ after the RSS
	// was read: the memory was measured with them all open.
	Alive int `json:"alive"`
	// WSPings and WSPingErrors count the WebSocket pings sent (WSPing),
	// WSPongs the pongs that answered them.
	WSPings      int `json:"ws_pings,omitempty"`
	WSPingErrors int `json:"ws_ping_errors,omitempty"`
	WSPongs      int `json:"ws_pongs,omitempty"`

	// RSS of the server (bytes): before connecting, EarlyAfter into the
	// settle time (or at its end if shorter), at its end, and the highest
	// sample in between. Zero without a server pid.
	BaselineRSS int64 `json:"baseline_rss_bytes"`
	EarlyRSS    int64 `json:"early_rss_bytes"`
	RSS         int64 `json:"rss_bytes"`
	PeakRSS     int64 `json:"peak_rss_bytes"`
	// BytesPerConn is (RSS - BaselineRSS) / Connected; the Early and Peak
	// variants use EarlyRSS and PeakRSS.
	BytesPerConn      float64 `json:"bytes_per_connection"`
	EarlyBytesPerConn float64 `json:"early_bytes_per_connection"`
	PeakBytesPerConn  float64 `json:"peak_bytes_per_connection"`
	// IdleCPUPercent is the server's CPU time from EarlyAfter into the
	// settle time to its end, over that wall time (100 is one core): what
	// the open, silent connections cost (keep-alive timers, periodic
	// scans). Zero without a server pid or with a settle time of at most
	// EarlyAfter.
	IdleCPUPercent float64 `json:"idle_cpu_percent"`
}

// EarlyAfter is when, into the settle time, EarlyRSS is taken.
const EarlyAfter = 5 * time.Second

// RunIdle opens the idle connections, reads the server's RSS before and
// after, checks that the connections are still open, and closes them.
func RunIdle(ctx context.Context, cfg IdleConfig, hooks Hooks) (*IdleResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	creds, err := resolveCredentials(cfg.Credentials, cfg.CredentialsFile, cfg.Username, cfg.Password, cfg.Clients)
	if err != nil {
		return nil, err
	}
	res := &IdleResult{Config: cfg}
	if cfg.ServerPID > 0 {
		rss, err := measure.ReadRSS(cfg.ServerPID)
		if err != nil {
			return nil, err
		}
		res.BaselineRSS = rss
	}

	clients := make([]*Client, cfg.Clients)
	var connectErrors atomic.Int64
	var firstErr atomic.Pointer[error]
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			user, pass := creds(i)
			id := fmt.Sprintf("%s-%06d", cfg.ClientPrefix, i)
			cl, err := Dial(ctx, cfg.Addr, ClientOptions{
				ClientID:  id,
				Version:   byte(cfg.Version),
				Keepalive: cfg.Keepalive,
				Username:  user,
				Password:  pass,
				TLS:       cfg.TLS,
				WebSocket: cfg.WebSocket,
			})
			if err == nil && cfg.Burst > 0 {
				if err = burst(cl, cfg.Burst, deviceFilter(cfg.BurstTopic, id, user)); err != nil {
					_ = cl.Close()
				}
			}
			if err != nil {
				connectErrors.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	res.ConnectTime = time.Since(start)
	res.ConnectErrors = int(connectErrors.Load())
	res.Connected = cfg.Clients - res.ConnectErrors
	defer closeAll(clients, cfg.Concurrency)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if res.Connected == 0 {
		return nil, fmt.Errorf("no idle client could connect: %w", *firstErr.Load())
	}
	if hooks.Progress != nil {
		hooks.Progress(fmt.Sprintf("%d idle connections open on %s after %v (%d failed); settling %v",
			res.Connected, cfg.Addr, res.ConnectTime.Round(time.Millisecond), res.ConnectErrors, cfg.Settle))
	}

	stopPings := func() {}
	if cfg.WSPing > 0 {
		pingCtx, stop := context.WithCancel(ctx)
		done := pingAll(pingCtx, clients, cfg.WSPing, res)
		stopPings = sync.OnceFunc(func() { stop(); <-done })
		defer stopPings()
	}
	if cfg.ServerPID > 0 {
		if err := settle(ctx, cfg.ServerPID, cfg.Settle, res); err != nil {
			return nil, err
		}
		perConn := func(rss int64) float64 { return float64(rss-res.BaselineRSS) / float64(res.Connected) }
		res.BytesPerConn = perConn(res.RSS)
		res.EarlyBytesPerConn = perConn(res.EarlyRSS)
		res.PeakBytesPerConn = perConn(res.PeakRSS)
	} else {
		sleepUntil(ctx, time.Now().Add(cfg.Settle))
	}
	stopPings()
	res.Alive = countAlive(clients, 10*time.Second)
	if cfg.WSPing > 0 {
		// countAlive read up to each PINGRESP, which the broker wrote
		// after the pongs of every ping before the PINGREQ.
		for _, cl := range clients {
			if cl != nil {
				res.WSPongs += int(cl.WebSocketPongs())
			}
		}
	}
	return res, nil
}

// pingAll has each connection send a WebSocket ping every interval, the
// connections spread over it, until ctx ends; res counts the pings sent
// and failed (read once the returned channel is closed).
func pingAll(ctx context.Context, clients []*Client, every time.Duration, res *IdleResult) <-chan struct{} {
	done := make(chan struct{})
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for i, cl := range clients {
		if cl == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now().Add(every * time.Duration(i) / time.Duration(len(clients)))
			for {
				if sleepUntil(ctx, next); ctx.Err() != nil {
					return
				}
				if cl.PingWebSocket() != nil {
					failed.Add(1)
				} else {
					sent.Add(1)
				}
				next = next.Add(every)
			}
		}()
	}
	go func() {
		wg.Wait()
		res.WSPings, res.WSPingErrors = int(sent.Load()), int(failed.Load())
		close(done)
	}()
	return done
}

// settle samples the RSS every 250ms for d and keeps the early, last and
// highest samples.
func settle(ctx context.Context, pid int, d time.Duration, res *IdleResult) error {
	start := time.Now()
	end := start.Add(d)
	var cpuFrom time.Duration
	var cpuAt time.Time
	for {
		rss, err := measure.ReadRSS(pid)
		if err != nil {
			return err
		}
		res.RSS = rss
		res.PeakRSS = max(res.PeakRSS, rss)
		now := time.Now()
		if res.EarlyRSS == 0 && (now.Sub(start) >= EarlyAfter || !now.Before(end)) {
			res.EarlyRSS = rss
			if now.Before(end) {
				if cpu, err := measure.ReadCPUTime(pid); err == nil {
					cpuFrom, cpuAt = cpu, now
				}
			}
		}
		if !now.Before(end) || ctx.Err() != nil {
			if cpu, err := measure.ReadCPUTime(pid); err == nil && !cpuAt.IsZero() && now.After(cpuAt) {
				res.IdleCPUPercent = 100 * float64(cpu-cpuFrom) / float64(now.Sub(cpuAt))
			}
			return ctx.Err()
		}
		next := time.Now().Add(250 * time.Millisecond)
		if next.After(end) {
			next = end
		}
		sleepUntil(ctx, next)
	}
}

// countAlive pings every connection and counts those that answer.
func countAlive(clients []*Client, timeout time.Duration) int {
	for _, cl := range clients {
		if cl != nil {
			_ = cl.Ping()
		}
	}
	deadline := time.Now().Add(timeout)
	alive := 0
	for _, cl := range clients {
		if cl == nil {
			continue
		}
		_ = cl.SetReadDeadline(deadline)
		for {
			pk, err := cl.ReadPacket()
			if err != nil {
				break
			}
			if pk.FixedHeader.Type == packets.Pingresp {
				alive++
				break
			}
		}
		_ = cl.SetReadDeadline(time.Time{})
	}
	return alive
}

// closeAll disconnects every client, concurrency at a time.
func closeAll(clients []*Client, concurrency int) {
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for _, cl := range clients {
		if cl == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = cl.Disconnect()
		}()
	}
	wg.Wait()
}

// burst publishes n QoS 1 messages to topic back to back, in one write, and
// waits for their PUBACKs (each a success).
func burst(cl *Client, n int, topic string) error {
	payload := make([]byte, 64)
	for i := range n {
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   topic,
			PacketID:    uint16(i + 1),
			Payload:     payload,
		}
		if err := cl.WritePacket(pk); err != nil {
			return err
		}
	}
	if err := cl.Flush(); err != nil {
		return err
	}
	_ = cl.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer func() { _ = cl.SetReadDeadline(time.Time{}) }()
	for acked := 0; acked < n; {
		pk, err := cl.ReadPacket()
		if err != nil {
			return fmt.Errorf("burst to %s: %d of %d acknowledged: %w", topic, acked, n, err)
		}
		if pk.FixedHeader.Type != packets.Puback {
			continue
		}
		if pk.ReasonCode >= 0x80 {
			return fmt.Errorf("burst to %s: PUBACK reason code %#x", topic, pk.ReasonCode)
		}
		acked++
	}
	return nil
}
