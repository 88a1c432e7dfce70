//go:build !unix

package listen

import "errors"

// rawWrites: no writes to the socket itself on this system; TLS
// connections write through the runtime's socket as crypto/tls does.
const rawWrites = false

func writeFD(uintptr, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}

func readFD(uintptr, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}

func peekFD(uintptr) (int, error) {
	return 0, errors.ErrUnsupported
}
