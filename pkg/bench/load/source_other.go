//go:build !unix

package load

import "syscall"

// bindAddressNoPort: never used here, where connections dial from the
// kernel's choice of address (sourceFor).
func bindAddressNoPort(_, _ string, _ syscall.RawConn) error { return nil }
