package frontend

import (
	"errors"
	"os"
	"time"
)

// The quiet timer: a busy connection that falls silent parks.
//
// A connection whose last two packets came within busyGap of each other
// waits for the next one on its goroutine (leanConn.serve), since parking
// between packets that follow closely would cost a system call and a
// hand-off each. Before the timer, one that fell silent right after such a
// burst kept that goroutine (and the stack its packets grew) until its
// next packet: a device reporting three messages back to back every few
// minutes held 28.8 KB against 9.8 KB idle (5,000 connections). Now its
// reader, when nothing waits above the socket, sets the socket's read
// deadline busyGap to 2 × busyGap after its last packet (again only when
// less than busyGap of it is left, so a busy connection resets a runtime
// timer at most once per busyGap, not per packet); when the deadline ends
// a wait that read nothing, the connection has been quiet for busyGap and
// parks. When it fires inside a packet (its first bytes came, the rest is
// late), the read goes on without it (conn.Read), as before.
//
// A WebSocket connection's reader (gorilla) keeps a deadline's error for
// good: it waits for the timer outside that reader, between messages
// (listen.QuietWaiter, leanConn.serve), and clears it before the next
// message is read.
//
// Close and expire set the same deadline in the past for good
// (conn.interrupt): under dmu, the reader never moves or clears the
// deadline once they did, and a read they fail is never taken for the
// timer's.

// armQuiet sets the quiet timer for a wait that begins with nothing
// buffered above the socket; last is when the last packet came.
func (c *conn) armQuiet(last int64) {
	c.quietMark = c.delivered
	if c.quietAt-last >= int64(busyGap) {
		return
	}
	c.dmu.Lock()
	if !c.interrupted {
		c.quietAt = last + 2*int64(busyGap)
		_ = c.Conn.SetReadDeadline(time.Now().Add(2 * busyGap))
	}
	c.dmu.Unlock()
}

// quietFired reports whether err ended a wait that armQuiet armed before
// any byte came: the quiet timer's, not Close's or an expiry's. The timer
// is cleared then.
func (c *conn) quietFired(err error) bool {
	return c.quietAt != 0 && c.delivered == c.quietMark && errors.Is(err, os.ErrDeadlineExceeded) && c.clearQuiet()
}

// quietInside reports whether err is the quiet timer's, firing after a
// packet's first bytes came: the read goes on without it (conn.Read).
func (c *conn) quietInside(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && c.clearQuiet()
}

// clearQuiet clears the socket's read deadline that armQuiet set, unless
// Close or an expiry set it in the past since: false then, and the read's
// failure is theirs.
func (c *conn) clearQuiet() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.quietAt = 0
	if c.interrupted {
		return false
	}
	_ = c.Conn.SetReadDeadline(time.Time{})
	return true
}
