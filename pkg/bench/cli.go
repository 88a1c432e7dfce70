package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
	"github.com/fleetgate/fleetgate/pkg/bench/report"
)

// ErrUsage is returned for a command line that names no known subcommand.
var ErrUsage = errors.New("usage")

const usageText = `fleetgate-bench: load generator for MQTT brokers (fleetgate, mosquitto, any other).

Usage:
  fleetgate-bench pub     [flags]   publish workload against one broker
  fleetgate-bench idle    [flags]   idle connections; memory per connection of one broker
  fleetgate-bench pairs   [flags]   publisher → subscriber pairs: end-to-end latency, deliveries/s, losses
  fleetgate-bench fanout  [flags]   one publisher → many subscribers of one topic
  fleetgate-bench connect [flags]   devices reconnecting (CONNECT → CONNACK [→ SUBSCRIBE → SUBACK] → DISCONNECT): connects/s, CONNACK latency
  fleetgate-bench retained [flags]  a wildcard SUBSCRIBE over N retained messages: time to the last, the broker's peak memory
  fleetgate-bench compare pub  -target name=host:port[,pid=N][,pprof=host:port][,creds=FILE][,metrics=host:port][,tls=CAFILE] -target ... [flags]
  fleetgate-bench compare idle|pairs|fanout|connect|retained -target ... [flags]
                                    the same workload against several brokers, side by side;
                                    a broker of several processes: pid=N+M+K (CPU and RSS summed,
                                    each listed), apart=N+M (listed, not counted: Kafka), and
                                    pprof=host:port+host:port (profiled at once)
  fleetgate-bench access-files -dir DIR [flags]
                                    rules file, identities, ES256 key and JWTs, password files
                                    for the access-control benchmark
  fleetgate-bench tls-files -dir DIR
                                    a CA and a server certificate for 127.0.0.1 (ECDSA P-256) for
                                    brokers listening on TLS; compare's tls=DIR/ca.pem
  fleetgate-bench archive [flags]   the archiver against a plain MongoDB bulk-insert loop: documents/s
  fleetgate-bench wakeup  [flags]   CPU cost of a loopback TCP round trip, back to back and waking a sleeping side
  fleetgate-bench free-port [n]     print n free loopback TCP ports (for scripts)

Run a subcommand with -help for its flags. Every subcommand takes -json.
`

// Main runs the command line: a subcommand and its flags. Progress goes to
// stderr, the report to stdout.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return ErrUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "pub":
		return mainPub(ctx, args, stdout, stderr)
	case "idle":
		return mainIdle(ctx, args, stdout, stderr)
	case load.WorkloadPairs, load.WorkloadFanout:
		return mainPubSub(ctx, cmd, args, stdout, stderr)
	case load.WorkloadConnect:
		return mainConnect(ctx, args, stdout, stderr)
	case load.WorkloadRetained:
		return mainRetained(ctx, args, stdout, stderr)
	case "access-files":
		return mainAccessFiles(ctx, args, stdout, stderr)
	case "tls-files":
		return mainTLSFiles(args, stdout, stderr)
	case "compare":
		return mainCompare(ctx, args, stdout, stderr)
	case "archive":
		return mainArchive(ctx, args, stdout, stderr)
	case "wakeup":
		return mainWakeup(ctx, args, stdout, stderr)
	case "free-port":
		return mainFreePort(args, stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return fmt.Errorf("%w: unknown subcommand %q", ErrUsage, cmd)
}

// common are the flags every subcommand has.
type common struct {
	json    bool
	jsonOut string
	quiet   bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.json, "json", false, "Print the result as JSON instead of a table.")
	fs.StringVar(&c.jsonOut, "json-out", "", "Also write the result as JSON to this file.")
	fs.BoolVar(&c.quiet, "quiet", false, "No progress lines on stderr.")
}

// output writes res as JSON or as a table, and to the -json-out file.
func (c *common) output(stdout io.Writer, res any, table func(io.Writer) error) error {
	if c.jsonOut != "" {
		f, err := os.Create(c.jsonOut)
		if err != nil {
			return fmt.Errorf("json-out: %w", err)
		}
		err = report.JSON(f, res)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("json-out %s: %w", c.jsonOut, err)
		}
	}
	if c.json {
		return report.JSON(stdout, res)
	}
	return table(stdout)
}

func (c *common) progress(stderr io.Writer) func(string) {
	if c.quiet {
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "bench")
	return func(msg string) { log.Info(msg) }
}

// parse parses args; it returns done=true after -help.
func parse(fs *flag.FlagSet, args []string, validate func() error) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, err
	}
	if fs.NArg() > 0 {
		return true, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return false, validate()
}

func raiseLimit(need int, progress func(string)) {
	limit, err := measure.RaiseFileLimit()
	if progress == nil || errors.Is(err, errors.ErrUnsupported) {
		return
	}
	if err != nil {
		progress(err.Error())
	}
	if uint64(need)+64 > limit {
		progress(fmt.Sprintf("open-file limit %d is below the %d connections asked for; raise the hard limit (ulimit -Hn / prlimit)", limit, need))
	}
}

func mainPub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.PubConfig
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args, cfg.Validate); done || err != nil {
		return err
	}
	tc, err := load.ClientTLS(cfg.TLSCA, cfg.Addr)
	if err != nil {
		return err
	}
	cfg.TLS = tc
	progress := c.progress(stderr)
	raiseLimit(cfg.Publishers, progress)
	res, err := load.RunPublish(ctx, cfg, load.Hooks{Progress: progress})
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WritePub(w, res) })
}

func mainIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.IdleConfig
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args, cfg.Validate); done || err != nil {
		return err
	}
	tc, err := load.ClientTLS(cfg.TLSCA, cfg.Addr)
	if err != nil {
		return err
	}
	cfg.TLS = tc
	progress := c.progress(stderr)
	raiseLimit(cfg.Clients, progress)
	res, err := load.RunIdle(ctx, cfg, load.Hooks{Progress: progress})
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WriteIdle(w, res) })
}

func mainPubSub(ctx context.Context, workload string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench "+workload, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := load.PubSubConfig{Workload: workload}
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args, cfg.Validate); done || err != nil {
		return err
	}
	progress := c.progress(stderr)
	raiseLimit(cfg.PublisherCount()+cfg.SubscriberCount(), progress)
	res, err := load.RunPubSub(ctx, cfg, load.Hooks{Progress: progress})
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WritePubSub(w, res) })
}

func mainCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || !compare.IsWorkload(args[0]) {
		fmt.Fprint(stderr, usageText)
		return fmt.Errorf("%w: compare needs a workload: %s, %s, %s, %s, %s or %s", ErrUsage, load.WorkloadPub, load.WorkloadIdle, load.WorkloadPairs, load.WorkloadFanout, load.WorkloadConnect, load.WorkloadRetained)
	}
	cfg := compare.Config{Workload: args[0]}
	fs := flag.NewFlagSet("fleetgate-bench compare "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args[1:], cfg.Validate); done || err != nil {
		return err
	}
	progress := c.progress(stderr)
	need := cfg.Pub.Publishers
	switch cfg.Workload {
	case load.WorkloadIdle:
		need = cfg.Idle.Clients
	case load.WorkloadPairs, load.WorkloadFanout:
		need = cfg.PubSub.PublisherCount() + cfg.PubSub.SubscriberCount()
	case load.WorkloadConnect:
		need = cfg.Connect.Concurrency
	}
	raiseLimit(need, progress)
	res, err := compare.Run(ctx, cfg, progress)
	if err != nil {
		return err
	}
	if cfg.Workload == load.WorkloadRetained {
		return c.output(stdout, res, func(w io.Writer) error { return writeRetainedCompare(w, res) })
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WriteCompare(w, res) })
}

func mainConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.ConnectConfig
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args, cfg.Validate); done || err != nil {
		return err
	}
	tc, err := load.ClientTLS(cfg.TLSCA, cfg.Addr)
	if err != nil {
		return err
	}
	cfg.TLS = tc
	progress := c.progress(stderr)
	raiseLimit(cfg.Concurrency, progress)
	res, err := load.RunConnect(ctx, cfg, load.Hooks{Progress: progress})
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WriteConnect(w, res) })
}

func mainWakeup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wakeup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	n := fs.Int("round-trips", 2000, "Round trips per gap.")
	gap := fs.Duration("gap", time.Millisecond, "Idle time between round trips in the second measurement.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *gap <= 0 {
		return errors.New("-round-trips must be at least 1 and -gap positive")
	}
	res, err := load.Wakeup(ctx, *n, []time.Duration{0, *gap})
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WriteWakeup(w, res) })
}

// mainFreePort prints n distinct free loopback ports, one a line. They are
// free when printed; a script uses them at once.
func mainFreePort(args []string, stdout io.Writer) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 || v > 100 {
			return fmt.Errorf("%w: free-port takes a count from 1 to 100", ErrUsage)
		}
		n = v
	}
	ports, err := freeLoopbackPorts(n)
	if err != nil {
		return err
	}
	for _, p := range ports {
		fmt.Fprintln(stdout, p)
	}
	return nil
}

// freeLoopbackPorts returns n distinct loopback ports that were free a
// moment ago.
func freeLoopbackPorts(n int) ([]int, error) {
	// Hold every listener until all are chosen so the ports differ.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
