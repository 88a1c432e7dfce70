package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// WritePub prints a publish result for people.
func WritePub(w io.Writer, r *load.PubResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%s\n", describePub(c))
	fmt.Fprintf(tw, "measured\t%v\n", r.Measured.Round(time.Millisecond))
	if c.QoS > 0 {
		fmt.Fprintf(tw, "acked/s\t%s\t(%d acks)\n", measure.FormatRate(r.AckedPerSec), r.Acked)
	}
	fmt.Fprintf(tw, "sent/s\t%s\t(%d publishes)\n", measure.FormatRate(r.SentPerSec), r.Sent)
	if c.QoS > 0 {
		l := r.Latency
		fmt.Fprintf(tw, "latency (%s)\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\n", ackName(c.QoS),
			measure.FormatDuration(l.P50), measure.FormatDuration(l.P90), measure.FormatDuration(l.P99), measure.FormatDuration(l.P999), measure.FormatDuration(l.Max))
	}
	fmt.Fprintf(tw, "errors\t%d\tnegative acks %d, disconnects %d, connect errors %d, unacked %d, unknown acks %d\n",
		r.Errors(), r.NegativeAcks, r.Disconnects, r.ConnectErrors, r.Unacked, r.UnknownAcks)
	if r.Server != nil {
		fmt.Fprintf(tw, "server\tcpu %.0f%%\t%s cpu/msg\trss %s\n", r.Server.CPUPercent, measure.FormatDuration(r.Server.CPUPerMessage), measure.FormatBytes(float64(r.Server.RSS)))
	}
	fmt.Fprintf(tw, "bench\tcpu %.0f%%\t%s cpu/msg\n", r.Bench.CPUPercent, measure.FormatDuration(r.Bench.CPUPerMessage))
	return tw.Flush()
}

// burstText describes the burst each idle connection sends first, "" for
// none.
func burstText(c load.IdleConfig) string {
	if c.Burst == 0 {
		return ""
	}
	return fmt.Sprintf(" (each first publishing %d QoS 1 messages back to back to %s)", c.Burst, c.BurstTopic)
}

// WriteIdle prints an idle result for people.
func WriteIdle(w io.Writer, r *load.IdleResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%d idle connections%s, MQTT %s, keepalive %v\n", c.Clients, burstText(c), versionName(c.Version), c.Keepalive)
	fmt.Fprintf(tw, "connected\t%d\t(%d failed) in %v; %d still answered PINGREQ afterwards\n", r.Connected, r.ConnectErrors, r.ConnectTime.Round(time.Millisecond), r.Alive)
	if c.WSPing > 0 {
		fmt.Fprintf(tw, "websocket pings\t%d\tevery %v per connection; %d failed, %d pongs\n", r.WSPings, c.WSPing, r.WSPingErrors, r.WSPongs)
	}
	if c.ServerPID > 0 {
		fmt.Fprintf(tw, "server rss\tbaseline %s\tafter %v %s\tafter %v %s\tpeak %s\n", measure.FormatBytes(float64(r.BaselineRSS)),
			min(load.EarlyAfter, c.Settle), measure.FormatBytes(float64(r.EarlyRSS)), c.Settle, measure.FormatBytes(float64(r.RSS)), measure.FormatBytes(float64(r.PeakRSS)))
		fmt.Fprintf(tw, "per connection\t%s\t(%.0f bytes; after %v %s, peak %s)\n", measure.FormatBytes(r.BytesPerConn), r.BytesPerConn,
			min(load.EarlyAfter, c.Settle), measure.FormatBytes(r.EarlyBytesPerConn), measure.FormatBytes(r.PeakBytesPerConn))
		fmt.Fprintf(tw, "server cpu\t%.2f%% of a core\t(from %v into the settle time to its end)\n", r.IdleCPUPercent, min(load.EarlyAfter, c.Settle))
	} else {
		fmt.Fprintf(tw, "server rss\tnot measured (no -server-pid)\n")
	}
	return tw.Flush()
}

// WritePubSub prints a pub/sub result for people.
func WritePubSub(w io.Writer, r *load.PubSubResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%s\n", describePubSub(c))
	fmt.Fprintf(tw, "subscriptions ready\tafter %v\t(%d subscribers not reached)\n", r.ReadyAfter.Round(time.Millisecond), r.NotReady)
	fmt.Fprintf(tw, "measured\t%v\n", r.Measured.Round(time.Millisecond))
	fmt.Fprintf(tw, "delivered/s\t%s\t(%d deliveries)\n", measure.FormatRate(r.DeliveredPerSec), r.Delivered)
	l := r.Latency
	fmt.Fprintf(tw, "end-to-end latency\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\n",
		measure.FormatDuration(l.P50), measure.FormatDuration(l.P90), measure.FormatDuration(l.P99), measure.FormatDuration(l.P999), measure.FormatDuration(l.Max))
	if p := r.Publish; p != nil {
		fmt.Fprintf(tw, "published\t%s/s sent\t%s/s acked\t%s p99 %s\n", measure.FormatRate(p.SentPerSec), measure.FormatRate(p.AckedPerSec), ackName(max(c.QoS, 1)), measure.FormatDuration(p.Latency.P99))
	}
	fmt.Fprintf(tw, "whole run\t%d expected\t%d received\tlost %d, duplicates %d, out of order %d, foreign %d\n",
		r.Expected, r.Received, r.Lost, r.Duplicates, r.OutOfOrder, r.Foreign)
	var pubErrs int64
	if r.Publish != nil {
		pubErrs = r.Publish.Errors()
	}
	fmt.Fprintf(tw, "errors\t%d\tpublisher errors %d, subscriber connect errors %d, subscribe failures %d, subscriber disconnects %d, lost %d\n",
		r.Errors(), pubErrs, r.SubConnectErrors, r.SubscribeFailures, r.SubDisconnects, r.Lost)
	if r.Server != nil {
		fmt.Fprintf(tw, "server\tcpu %.0f%%\t%s cpu/delivery\trss %s\n", r.Server.CPUPercent, measure.FormatDuration(r.Server.CPUPerMessage), measure.FormatBytes(float64(r.Server.RSS)))
	}
	fmt.Fprintf(tw, "bench\tcpu %.0f%%\t%s cpu/delivery\n", r.Bench.CPUPercent, measure.FormatDuration(r.Bench.CPUPerMessage))
	return tw.Flush()
}

func describePubSub(c load.PubSubConfig) string {
	var who string
	if c.Workload == load.WorkloadFanout {
		who = fmt.Sprintf("1 publisher → %d subscribers of one topic", c.Subscribers)
	} else {
		who = fmt.Sprintf("%d publisher → subscriber pairs", c.Pairs)
	}
	return fmt.Sprintf("%s; publish qos %d, subscribe qos %d, %s sessions, %d-byte payloads, MQTT %s, %s, %v measured after %v warm-up",
		who, c.QoS, c.SubQoS, c.SessionKind(), c.PayloadSize, versionName(c.Version), c.Mode(), c.Duration, c.Warmup)
}

func describePub(c load.PubConfig) string {
	return fmt.Sprintf("qos %d, %d publishers, %d-byte payloads, MQTT %s, %s, %v measured after %v warm-up",
		c.QoS, c.Publishers, c.PayloadSize, versionName(c.Version), c.Mode(), c.Duration, c.Warmup)
}

func ackName(qos int) string {
	if qos == 2 {
		return "pubcomp"
	}
	return "puback"
}

func versionName(v int) string {
	if v == 5 {
		return "5.0"
	}
	return "3.1.1"
}

// WriteWakeup prints the wake-up cost for people.
func WriteWakeup(w io.Writer, res load.WakeupResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "loopback TCP round trip, 64 bytes\tgap\twall (without the gap)\tcpu\t")
	for _, r := range res.Rows {
		what := "back to back"
		if r.Gap > 0 {
			what = "each message wakes a sleeping side"
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%v\t\n", what, r.Gap, r.Wall.Round(100*time.Nanosecond), r.CPU.Round(100*time.Nanosecond))
	}
	if len(res.Rows) == 2 && res.Rows[0].CPU > 0 {
		fmt.Fprintf(tw, "cpu per round trip, woken / back to back\t\t\t%.1fx\t\n", float64(res.Rows[1].CPU)/float64(res.Rows[0].CPU))
	}
	return tw.Flush()
}

// WriteConnect prints a connect result for people: the measured passes
// together, then every pass.
func WriteConnect(w io.Writer, r *load.ConnectResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%s\n", describeConnect(c, ""))
	fmt.Fprintf(tw, "connects/s\t%s\t(%d connected in %v, measured passes)\n", measure.FormatRate(r.ConnectsPerSec), r.Connected, r.Measured.Round(time.Millisecond))
	l := r.Connack
	fmt.Fprintf(tw, "connack latency\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\n",
		measure.FormatDuration(l.P50), measure.FormatDuration(l.P90), measure.FormatDuration(l.P99), measure.FormatDuration(l.P999), measure.FormatDuration(l.Max))
	fmt.Fprintf(tw, "failures\t%d\trefused %d%s, errors %d\n", r.Failures(), r.Refused, formatCodes(r.RefusedCodes), r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(tw, "first failure\t%s\n", r.FirstError)
	}
	if r.Server != nil {
		fmt.Fprintf(tw, "server\tcpu %.0f%%\t%s cpu/connect\n", r.Server.CPUPercent, measure.FormatDuration(r.Server.CPUPerMessage))
	}
	fmt.Fprintf(tw, "bench\tcpu %.0f%%\t%s cpu/connect\n", r.Bench.CPUPercent, measure.FormatDuration(r.Bench.CPUPerMessage))
	for i, p := range r.Passes {
		kind := "measured"
		if p.Warmup {
			kind = "warm-up"
		}
		server := ""
		if p.Server != nil {
			server = fmt.Sprintf(", server %s cpu/connect", measure.FormatDuration(p.Server.CPUPerMessage))
		}
		fmt.Fprintf(tw, "pass %d (%s)\t%s/s\t%d connected in %v, connack p50 %s p99 %s, refused %d, errors %d%s\n", i+1, kind,
			measure.FormatRate(p.ConnectsPerSec), p.Connected, p.Wall.Round(time.Millisecond),
			measure.FormatDuration(p.Connack.P50), measure.FormatDuration(p.Connack.P99), p.Refused, p.Errors, server)
	}
	return tw.Flush()
}

// describeConnect describes the connect workload; per follows the device
// count (" per target" in a comparison).
func describeConnect(c load.ConnectConfig, per string) string {
	creds := "anonymous"
	switch {
	case c.CredentialsFile != "":
		creds = "credentials of " + c.CredentialsFile
	case c.Credentials != nil:
		creds = "credentials per device"
	case c.Username != "":
		creds = "one username for all"
	}
	cycle := "CONNECT → CONNACK → DISCONNECT"
	if c.Subscribe != "" {
		cycle = "CONNECT → CONNACK → SUBSCRIBE " + c.Subscribe + " → SUBACK → DISCONNECT"
	}
	session := "clean sessions"
	if c.Persistent {
		session = "persistent sessions"
	}
	return fmt.Sprintf("%d devices%s, %d at a time, %s, MQTT %s, %s, %s; %d warm-up and %d measured pass(es)",
		c.Clients, per, c.Concurrency, cycle, versionName(c.Version), session, creds, c.WarmupPasses, c.Passes)
}

// formatCodes prints refusal counts by reason code, in code order.
func formatCodes(codes map[string]int64) string {
	if len(codes) == 0 {
		return ""
	}
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, codes[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
