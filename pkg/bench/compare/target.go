package compare

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetgate/fleetgate/pkg/bench/load"
)

// Target is one broker under comparison.
type Target struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// PID is the broker's process id, for its CPU time and RSS; of a broker
	// of several processes (pid=N+M+K), the first.
	PID int `json:"pid,omitempty"`
	// PIDs are the processes of a broker of several (a fleetgate frontend,
	// its dispatcher and redis-server): their CPU time and RSS are summed as
	// the broker's, and each is reported on its own. Unset for one process.
	PIDs []int `json:"pids,omitempty"`
	// Apart are processes whose CPU time and RSS are reported beside the
	// broker's and not counted in them (the Kafka broker of a fleetgate
	// cluster, a load balancer).
	Apart []int `json:"apart,omitempty"`
	// Pprof is the host:port (or base URL) of a Go pprof server: a CPU
	// profile of the broker is taken during its first measured round.
	// Several, joined by "+" (a frontend's and a dispatcher's), are profiled
	// at once.
	Pprof string `json:"pprof,omitempty"`
	// Creds is a file of username:password lines (load.ReadCredentialsFile)
	// the workload's clients connect to this target with, client i with
	// line i, instead of the workload's own credentials: so that one
	// comparison sets brokers that want different credentials side by side.
	Creds string `json:"creds,omitempty"`
	// Metrics is the host:port (or base URL) of a Go broker's Prometheus
	// /metrics, whose Go heap the retained workload samples.
	Metrics string `json:"metrics,omitempty"`
	// TLSCA is a PEM CA file: the clients connect to this target over TLS
	// and verify its certificate with it (TLSConfig).
	TLSCA string `json:"tls_ca,omitempty"`
	// WebSocket is a path: the clients speak MQTT over WebSocket to it
	// (over TLS too with TLSCA).
	WebSocket string `json:"websocket,omitempty"`
}

// targetSyntax is what ParseTarget reads.
const targetSyntax = "name=host:port[,pid=N[+N...]][,apart=N[+N...]][,pprof=host:port[+host:port...]][,creds=FILE][,metrics=host:port][,tls=CAFILE][,ws=PATH]"

// ParseTarget parses
// "name=host:port[,pid=N[+N...]][,apart=N[+N...]][,pprof=host:port[+host:port...]][,creds=FILE][,metrics=host:port][,tls=CAFILE]".
func ParseTarget(s string) (Target, error) {
	var t Target
	parts := strings.Split(s, ",")
	name, addr, ok := strings.Cut(parts[0], "=")
	if !ok || name == "" || addr == "" {
		return t, fmt.Errorf("target %q: want %s", s, targetSyntax)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return t, fmt.Errorf("target %q: address: %w", s, err)
	}
	t.Name, t.Addr = name, addr
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "pid":
			pids, err := parsePIDs(v)
			if err != nil {
				return t, fmt.Errorf("target %q: pid %q: %w", s, v, err)
			}
			t.PID = pids[0]
			if len(pids) > 1 {
				t.PIDs = pids
			}
		case "apart":
			pids, err := parsePIDs(v)
			if err != nil {
				return t, fmt.Errorf("target %q: apart %q: %w", s, v, err)
			}
			t.Apart = pids
		case "pprof":
			if v == "" || slices.Contains(strings.Split(v, "+"), "") {
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
		case "tls":
			if v == "" {
				return t, fmt.Errorf("target %q: tls: give the CA file that signed the broker's certificate", s)
			}
			t.TLSCA = v
		case "ws":
			if !strings.HasPrefix(v, "/") {
				return t, fmt.Errorf("target %q: ws: give the WebSocket path, starting with / (e.g. ws=/mqtt)", s)
			}
			t.WebSocket = v
		default:
			return t, fmt.Errorf("target %q: unknown key %q (want pid, apart, pprof, creds, metrics, tls or ws)", s, k)
		}
	}
	if len(t.Apart) > 0 && t.PID == 0 {
		return t, fmt.Errorf("target %q: apart: give pid too (the processes counted as the broker's)", s)
	}
	for _, a := range t.Apart {
		if slices.Contains(t.processIDs(), a) {
			return t, fmt.Errorf("target %q: process %d is both counted (pid) and apart", s, a)
		}
	}
	return t, nil
}

// parsePIDs parses "N[+N...]": distinct positive process ids.
func parsePIDs(v string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(v, "+") {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, errors.New("must be positive integers joined by +")
		}
		if slices.Contains(pids, pid) {
			return nil, fmt.Errorf("process %d given twice", pid)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// processIDs are the processes counted as the broker's (pid=).
func (t Target) processIDs() []int {
	if len(t.PIDs) > 0 {
		return t.PIDs
	}
	if t.PID > 0 {
		return []int{t.PID}
	}
	return nil
}

// isGroup reports whether compare samples t's processes itself (a
// broker of several processes, or with processes apart) instead of handing
// the workload one server pid.
func (t Target) isGroup() bool { return len(t.PIDs) > 1 || len(t.Apart) > 0 }

// pprofAddrs are the pprof servers of t, in order.
func (t Target) pprofAddrs() []string {
	if t.Pprof == "" {
		return nil
	}
	return strings.Split(t.Pprof, "+")
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

// TLSConfig is the client TLS configuration of a target with TLSCA (nil
// without): load.ClientTLS, its certificate verified with the CA for the
// host of Addr, as a device does.
func (t Target) TLSConfig() (*tls.Config, error) {
	c, err := load.ClientTLS(t.TLSCA, t.Addr)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	return c, nil
}
