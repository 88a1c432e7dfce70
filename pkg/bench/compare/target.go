package compare

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Target is one broker under comparison.
type Target struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// PID is the broker's process id, for its CPU time and RSS.
	PID int `json:"pid,omitempty"`
	// Pprof is the host:port (or base URL) of a Go pprof server: a CPU
	// profile of the broker is taken during its first measured round.
	Pprof string `json:"pprof,omitempty"`
	// Creds is a file of username:password lines (load.ReadCredentialsFile)
	// the workload's clients connect to this target with, client i with
	// line i, instead of the workload's own credentials: so that one
	// comparison sets brokers that want different credentials side by side.
	Creds string `json:"creds,omitempty"`
	// Metrics is the host:port (or base URL) of a Go broker's Prometheus
	// /metrics, whose Go heap the retained workload samples.
	Metrics string `json:"metrics,omitempty"`
}

// ParseTarget parses
// "name=host:port[,pid=N][,pprof=host:port][,creds=FILE][,metrics=host:port]".
func ParseTarget(s string) (Target, error) {
	var t Target
	parts := strings.Split(s, ",")
	name, addr, ok := strings.Cut(parts[0], "=")
	if !ok || name == "" || addr == "" {
		return t, fmt.Errorf("target %q: want name=host:port[,pid=N][,pprof=host:port][,creds=FILE][,metrics=host:port]", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return t, fmt.Errorf("target %q: address: %w", s, err)
	}
	t.Name, t.Addr = name, addr
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "pid":
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return t, fmt.Errorf("target %q: pid %q: must be a positive integer", s, v)
			}
			t.PID = pid
		case "pprof":
			if v == "" {
				return t, fmt.Errorf("target %q: pprof: must not be empty", s)
			}
			t.Pprof = v
		case "creds":
			if v == "" {
				return t, fmt.Errorf("target %q: creds: must not be empty", s)
			}
			t.Creds = v
		case "metrics":
			if v == "" {
				return t, fmt.Errorf("target %q: metrics: must not be empty", s)
			}
			t.Metrics = v
		default:
			return t, fmt.Errorf("target %q: unknown key %q (want pid, pprof, creds or metrics)", s, k)
		}
	}
	return t, nil
}

// Targets is a repeatable -target flag.
type Targets []Target

// String implements flag.Value.
func (ts *Targets) String() string {
	var s []string
	for _, t := range *ts {
		s = append(s, t.Name+"="+t.Addr)
	}
	return strings.Join(s, " ")
}

// Set implements flag.Value.
func (ts *Targets) Set(s string) error {
	t, err := ParseTarget(s)
	if err != nil {
		return err
	}
	for _, o := range *ts {
		if o.Name == t.Name {
			return fmt.Errorf("target %q given twice", t.Name)
		}
	}
	*ts = append(*ts, t)
	return nil
}
