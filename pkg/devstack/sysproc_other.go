//go:build !linux

package devstack

import "syscall"

// childAttr: no parent-death signal outside Linux. A redis-server left
// behind by a dev stack that was killed is found by the next start, which
// stops it (ownRedis).
func childAttr() *syscall.SysProcAttr { return nil }
