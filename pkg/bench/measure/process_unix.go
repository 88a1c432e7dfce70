//go:build unix

package measure

import (
	"fmt"
	"syscall"
	"time"
)

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
		return uint64(rl.Cur), nil
	}
	want := rl
	want.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return uint64(rl.Cur), fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", want.Cur, err)
	}
	return uint64(want.Cur), nil
}
