package measure

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoRSS is returned when /proc/<pid>/status has no VmRSS line (a kernel
// thread or a zombie).
var ErrNoRSS = errors.New("no VmRSS in status")

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ReadRSS returns the resident set size of process pid in bytes, from the
// VmRSS line of /proc/<pid>/status.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading rss of pid %d: %w", pid, err)
	}
	return parseStatusKB(b, "VmRSS:")
}

// parseStatusKB finds a "Key:   123 kB" line and returns its value in bytes.
func parseStatusKB(status []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		f := strings.Fields(line[len(key):])
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parsing %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, ErrNoRSS
}

// ReadName returns the command name of process pid (/proc/<pid>/comm: the
// executable's name, at most 15 bytes), or "?" when it cannot be read.
func ReadName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// ReadCPUTime returns the user plus system CPU time process pid has used,
// from /proc/<pid>/stat.
func ReadCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading cpu time of pid %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU extracts utime+stime (fields 14 and 15) from a stat line. The
// command name (field 2) is in parentheses and may contain spaces, so fields
// are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing stat %q: no command name", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing stat: %d fields", len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing stat cpu field %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// SelfCPUTime returns the user plus system CPU time this process has used.
func SelfCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RaiseFileLimit lifts this process's open-file soft limit to its hard
// limit, so that one process can hold thousands of connections, and returns
// the limit now in force.
func RaiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur >= rl.Max {
		return rl.Cur, nil
	}
	want := rl
	want.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return rl.Cur, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", want.Cur, err)
	}
	return want.Cur, nil
}

// ProcessSample is a snapshot of a server process's CPU time and RSS.
type ProcessSample struct {
	CPU time.Duration
	RSS int64
	// OK is false when the process could not be read.
	OK bool
}

// SampleProcess reads pid's counters; pid 0 (unknown) yields OK=false.
func SampleProcess(pid int) ProcessSample {
	if pid <= 0 {
		return ProcessSample{}
	}
	cpu, err := ReadCPUTime(pid)
	if err != nil {
		return ProcessSample{}
	}
	rss, err := ReadRSS(pid)
	if err != nil {
		return ProcessSample{}
	}
	return ProcessSample{CPU: cpu, RSS: rss, OK: true}
}

// ProcessUsage is a process's CPU time and memory over a window.
type ProcessUsage struct {
	CPU time.Duration `json:"cpu_ns"`
	// CPUPercent is CPU time over wall time; 200 is both cores of a
	// 2-core machine.
	CPUPercent float64 `json:"cpu_percent"`
	// CPUPerMessage is CPU time per message the workload counts: an acked
	// (QoS 0: sent) publish, or a delivery.
	CPUPerMessage time.Duration `json:"cpu_per_message_ns"`
	RSS           int64         `json:"rss_bytes,omitempty"`
}

// Usage is cpu spent over wall time on msgs messages (RSS left unset).
func Usage(cpu, wall time.Duration, msgs int64) ProcessUsage {
	u := ProcessUsage{CPU: cpu}
	if wall > 0 {
		u.CPUPercent = 100 * cpu.Seconds() / wall.Seconds()
	}
	if msgs > 0 {
		u.CPUPerMessage = cpu / time.Duration(msgs)
	}
	return u
}
