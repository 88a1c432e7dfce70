//go:build unix && !linux

package testkit

import "syscall"

// childAttr: no parent-death signal outside Linux; a test binary that
// panics or times out may leave the processes it started running.
func childAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: ownGroup}
}
