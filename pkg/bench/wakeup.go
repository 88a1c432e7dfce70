package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"syscall"
	"text/tabwriter"
	"time"
)

// WakeupResult is what one loopback ping-pong measured: the cost of a
// message crossing a TCP connection on this machine and being answered,
// back to back (both sides stay awake) and with idle gaps between round
// trips (each side sleeps, and every message has to wake it).
type WakeupResult struct {
	RoundTrips int            `json:"round_trips"`
	Rows       []WakeupSample `json:"rows"`
}

// WakeupSample is one gap's measurement.
type WakeupSample struct {
	Gap time.Duration `json:"gap_ns"`
	// Wall and CPU are per round trip; CPU is this process's user plus
	// system time, both ends of the connection included.
	Wall time.Duration `json:"wall_ns"`
	CPU  time.Duration `json:"cpu_ns"`
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Wakeup runs n round trips of a 64-byte message over a loopback TCP
// connection for each gap (0: back to back).
func Wakeup(ctx context.Context, n int, gaps []time.Duration) (WakeupResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return WakeupResult{}, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return WakeupResult{}, err
	}
	defer c.Close()
	b := make([]byte, 64)
	res := WakeupResult{RoundTrips: n}
	for _, gap := range gaps {
		cpu0, t0 := processCPU(), time.Now()
		var idle time.Duration
		for range n {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if _, err := c.Write(b); err != nil {
				return res, err
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return res, err
			}
			if gap > 0 {
				s := time.Now()
				time.Sleep(gap)
				idle += time.Since(s)
			}
		}
		wall := time.Since(t0) - idle
		res.Rows = append(res.Rows, WakeupSample{Gap: gap, Wall: wall / time.Duration(n), CPU: (processCPU() - cpu0) / time.Duration(n)})
	}
	return res, nil
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
	res, err := Wakeup(ctx, *n, []time.Duration{0, *gap})
	if err != nil {
		return err
	}
	return c.report(stdout, res, func(w io.Writer) error {
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
	})
}
