//go:build linux

package testkit

import "syscall"

// childAttr: the kernel kills a process a test starts when the test binary
// ends, even when it panics or times out and its cleanups do not run;
// ownGroup puts it in a process group of its own as well.
func childAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: ownGroup, Pdeathsig: syscall.SIGKILL}
}
