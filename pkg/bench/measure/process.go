package measure

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
