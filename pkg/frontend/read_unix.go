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
	c.rw, c.rerrno = 0, 0
	if c.rfn == nil {
		c.rfn = c.rawReadStep
	}
	err := c.raw.Read(c.rfn)
	b, n := c.rbuf, int(c.rw)
	c.rbuf, c.rw = nil, 0
	switch {
	case err != nil:
	case c.rerrno == syscall.EAGAIN:
		err = errWouldBlock // c.noWait
	case c.rerrno != 0:
		err = os.NewSyscallError("read", c.rerrno)
	case n < 0:
		err = io.EOF
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
			if c.noWait {
				c.rerrno = syscall.EAGAIN // rawRead: errWouldBlock
				return true
			}
			return false
		case err != nil:
			c.rerrno, _ = err.(syscall.Errno)
			if c.rerrno == 0 {
				c.rerrno = syscall.EIO // not an errno: never from read(2)
			}
			return true
		case n == 0:
			c.rw = -1 // the end of the stream
			return true
		}
		c.rw = int32(n)
		return true
	}
}
