//go:build !unix

package frontend

// rawReads reports that conn can read the socket itself: not on this
// system, where mochi keeps a buffer of mqtt.read-buffer-size for each
// connection (mochiReadBuffer), as before.
const rawReads = false

func (c *conn) rawRead() (*[]byte, int, error) { panic("frontend: no raw reads on this system") }
