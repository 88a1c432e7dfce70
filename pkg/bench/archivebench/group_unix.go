//go:build unix

package archivebench

import (
	"os"
	"syscall"
)

// ownGroup starts the server in a process group of its own: an interrupt of
// the bench does not reach it.
func ownGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup kills the server's process group.
func killGroup(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) }
