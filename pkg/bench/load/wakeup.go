package load

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
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
		cpu0, t0 := measure.SelfCPUTime(), time.Now()
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
		res.Rows = append(res.Rows, WakeupSample{Gap: gap, Wall: wall / time.Duration(n), CPU: (measure.SelfCPUTime() - cpu0) / time.Duration(n)})
	}
	return res, nil
}
