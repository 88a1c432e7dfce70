//go:build unix

package frontend

import (
	"io"
	"os"
	"syscall"
)

// rawReads reports that conn can read the socket itself (rawRead).
const rawReads = true

// rawRead reads the socket into a buffer of the pool, lent for the read:
// the step given to RawConn.Read gives it back each time the socket has
// nothing yet, so the goroutine waits for the socket without it. It
// returns the buffer with the n bytes read (nil with an error).
func (c *conn) rawRead() (*[]byte, int, error) {
	c.rw, c.rerr = 0, nil
	if c.rfn == nil {
		c.rfn = c.rawReadStep
	}
	err := c.raw.Read(c.rfn)
	b, n := c.rbuf, int(c.rw)
	c.rbuf, c.rw = nil, 0
	if err == nil {
		err = c.rerr
	}
	if err != nil {
		if b != nil {
			c.pool.put(b)
		}
		return nil, 0, err // the socket's deadline or close, or the read's error
	}
	return b, n, nil
}

// rawReadStep is one attempt of rawRead: it reads into the lent buffer, or
// gives the buffer back and reports that the socket has nothing yet.
func (c *conn) rawReadStep(fd uintptr) bool {
	if c.rbuf == nil {
		c.rbuf = c.pool.get()
	}
	for {
		n, err := syscall.Read(int(fd), *c.rbuf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			c.pool.put(c.rbuf)
			c.rbuf = nil
			return false
		case err != nil:
			c.rerr = os.NewSyscallError("read", err)
			return true
		case n == 0:
			c.rerr = io.EOF
			return true
		}
		c.rw = int32(n)
		return true
	}
}
