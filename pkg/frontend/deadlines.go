package frontend

import (
	"context"
	"sync"
	"time"
)

// deadlines enforces the deadlines of the node's connections without a
// runtime timer each: the expiry of their credential
// (authz.disconnect-at-expiry), and for the connections fleetgate serves
// itself (mqtt.serve=lean) the CONNECT timeout and the keep-alive and idle
// deadlines of their reads.
//
// A deadline set on a socket, like a time.AfterFunc, is a timer in the Go
// runtime's timer heap, and the runtime walks that whole heap whenever a
// timer in it was reset to fire sooner and its time has come. The Kafka
// producer resets its linger timers (kafka.linger) about once per produce
// request, so with a timer per connection the runtime walked every
// connection's timer about a thousand times a second: 3–6 % of the
// frontend's CPU with 10,000 devices, growing with the connections a node
// holds, for no message more (docs/benchmarks.md).
//
// Instead each deadline is a number here, and the connection sits in the
// slot of one tick (tickEvery apart) at or after its earliest deadline.
// Moving a deadline later, as every packet does, changes the number only;
// when a slot's tick comes, a connection whose deadlines moved on goes to
// the slot of the earliest, one whose read deadline passed is woken by a
// socket deadline in the past, which ends its read with a timeout as a
// socket deadline did, and one whose credential expired has its expiry
// called. A deadline is enforced up to tickEvery late, never early.
type deadlines struct {
	mu    sync.Mutex
	slots map[int64]map[*conn]struct{} // tick → connections filed under it; guarded by mu
	now   func() time.Time
}

// tickEvery is how often deadlines are checked, the most a deadline is
// enforced late.
const tickEvery = 250 * time.Millisecond

func newDeadlines() *deadlines {
	return &deadlines{slots: map[int64]map[*conn]struct{}{}, now: time.Now}
}

// tickOf is the first tick at or after t (unix ns).
func tickOf(t int64) int64 {
	tick := t / int64(tickEvery)
	if t%int64(tickEvery) != 0 {
		tick++
	}
	return tick
}

// unixNano is t in unix ns, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// set makes t the deadline of c's reads; the zero time removes it.
func (d *deadlines) set(c *conn, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.deadline = unixNano(t)
	d.refile(c)
}

// setCredential calls expired once t, when c's credential expires, has
// passed, unless set again first; the zero time removes it.
func (d *deadlines) setCredential(c *conn, t time.Time, expired func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.credential, c.onCredential = unixNano(t), expired
	if c.credential == 0 {
		c.onCredential = nil
	}
	d.refile(c)
}

// forget removes every deadline of c, which ended: the wheel must not hold
// it.
func (d *deadlines) forget(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.deadline, c.credential, c.onCredential = 0, 0, nil
	d.unfile(c)
}

// refile files c under the tick of its earliest deadline when it is not
// filed or filed later; a connection filed earlier stays, and is filed
// again at that tick. d.mu is held.
func (d *deadlines) refile(c *conn) {
	next := c.next()
	switch {
	case next == 0:
		d.unfile(c)
	case c.tick == 0 || tickOf(next) < c.tick:
		d.unfile(c)
		d.file(c, tickOf(next))
	}
}

// next is c's earliest deadline (unix ns), 0 for none; d.mu is held.
func (c *conn) next() int64 {
	switch {
	case c.deadline == 0:
		return c.credential
	case c.credential == 0 || c.deadline < c.credential:
		return c.deadline
	}
	return c.credential
}

// file puts c under tick; d.mu is held.
func (d *deadlines) file(c *conn, tick int64) {
	slot := d.slots[tick]
	if slot == nil {
		slot = map[*conn]struct{}{}
		d.slots[tick] = slot
	}
	slot[c] = struct{}{}
	c.tick = tick
}

// unfile takes c out of its slot; d.mu is held.
func (d *deadlines) unfile(c *conn) {
	if c.tick == 0 {
		return
	}
	if slot := d.slots[c.tick]; slot != nil {
		delete(slot, c)
		if len(slot) == 0 {
			delete(d.slots, c.tick)
		}
	}
	c.tick = 0
}

// run checks the deadlines every tickEvery until ctx ends.
func (d *deadlines) run(ctx context.Context) {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			reads, credentials := d.due()
			for _, c := range reads {
				c.expire()
			}
			for _, f := range credentials {
				// Its own goroutine: an MQTT 5 client gets a DISCONNECT,
				// whose write must not hold up the other deadlines.
				go f()
			}
		}
	}
}

// due takes the slots whose tick has come and returns the connections whose
// read deadline passed and the expiries of the credentials that expired,
// each deadline then removed; the connections with a deadline left are
// filed under the tick of the earliest.
func (d *deadlines) due() (reads []*conn, credentials []func()) {
	now := d.now().UnixNano()
	cur := tickOf(now)
	d.mu.Lock()
	defer d.mu.Unlock()
	for tick, slot := range d.slots {
		if tick > cur {
			continue
		}
		delete(d.slots, tick)
		for c := range slot {
			c.tick = 0
			if c.deadline != 0 && c.deadline <= now {
				c.deadline = 0
				reads = append(reads, c)
			}
			if c.credential != 0 && c.credential <= now {
				if c.onCredential != nil {
					credentials = append(credentials, c.onCredential)
				}
				c.credential, c.onCredential = 0, nil
			}
			if next := c.next(); next != 0 {
				d.file(c, tickOf(next))
			}
		}
	}
	return reads, credentials
}

// filed is the number of connections with a deadline (tests).
func (d *deadlines) filed() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, slot := range d.slots {
		n += len(slot)
	}
	return n
}
