package devstack

import "syscall"

// childAttr makes the kernel send redis-server SIGTERM when the dev stack's
// process ends, however it ends.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
