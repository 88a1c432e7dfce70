//go:build !unix

package frontend

// rawReads reports that conn can read the socket itself: not on this
// system, where a connection waits in its net.Conn holding the lent buffer.
const rawReads = false

func (c *conn) rawRead() (*[]byte, int, error) { panic("frontend: no raw reads on this system") }
