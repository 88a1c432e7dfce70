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

// peekFD looks at the socket fd without waiting and without taking a byte:
// 1 when it has one, 0 at its end, EAGAIN when it has nothing yet.
func peekFD(fd uintptr) (int, error) {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}
