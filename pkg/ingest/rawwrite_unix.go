//go:build unix

package ingest

import "syscall"

// writeFD is one write(2) of b to the socket fd (a RawWriter's).
func writeFD(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }
