//go:build unix

package listen

import "syscall"

// rawWrites: the TLS listener's sockets take writes that do not wait for
// the client (nbConn).
const rawWrites = true

// writeFD is one write(2) of b to the socket fd.
func writeFD(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }

// readFD is one read(2) of the socket fd into b.
func readFD(fd uintptr, b []byte) (int, error) { return syscall.Read(int(fd), b) }
