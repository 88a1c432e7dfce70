package frontend

import (
	"context"
	"sync"
	"time"
)

// deadlines enforces the keep-alive and idle deadlines of the connections
// fleetgate serves (mqtt.serve=lean) without a runtime timer each.
//
// A read deadline set on a socket is a timer in the Go runtime's timer heap,
// and the runtime walks that whole heap whenever a timer in it was reset to
// fire sooner and its time has come. The Kafka producer resets its linger
// timers (kafka.linger) about once per produce request, so with a deadline
// per connection every millisecond or so the runtime walked 10,000 or more
// timers: 6 % of the frontend's CPU with 10,000 devices sending once a
// second, growing with the connections a node holds, for no message more
// (docs/benchmarks.md).
//
// Instead each connection's deadline is a number here, and the connection
// sits in the slot of one tick (tickEvery apart) at or after its deadline.
// Moving a deadline later, as every packet does, changes the number only;
// when a slot's tick comes, a connection whose deadline moved on goes to the
// slot of its new deadline, and one whose deadline passed is woken by a
// socket deadline in the past, which ends its read with a timeout as the
// runtime timer did. A deadline is enforced up to tickEvery late, never
// early.
type deadlines struct {
	mu    sync.Mutex
	slots map[int64]map[*conn]struct{} // tick → connections filed under it; guarded by mu
	now   func() time.Time
}

// tickEvery is how often deadlines are checked, the most a connection is
// closed after its deadline.
const tickEvery = 250 * time.Millisecond

func newDeadlines() *deadlines {
	return &deadlines{slots: map[int64]map[*conn]struct{}{}, now: time.Now}
}

// tickOf is the first tick at or after t.
func tickOf(t time.Time) int64 {
	n := t.UnixNano()
	tick := n / int64(tickEvery)
	if n%int64(tickEvery) != 0 {
		tick++
	}
	return tick
}

// set makes t the deadline of c's reads; the zero time removes it, and c
// with it (a connection that ended must not be held here).
func (d *deadlines) set(c *conn, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.IsZero() {
		c.deadline = 0
		d.unfile(c)
		return
	}
	c.deadline = t.UnixNano()
	if tick := tickOf(t); c.tick == 0 || tick < c.tick {
		// Not filed yet, or due before the tick it is filed under.
		d.unfile(c)
		d.file(c, tick)
	}
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
			for _, c := range d.due() {
				c.expire()
			}
		}
	}
}

// due takes the slots whose tick has come and returns the connections whose
// deadline passed, no longer filed; the others are filed under their
// deadline's tick.
func (d *deadlines) due() []*conn {
	now := d.now()
	cur, ns := tickOf(now), now.UnixNano()
	var expired []*conn
	d.mu.Lock()
	defer d.mu.Unlock()
	for tick, slot := range d.slots {
		if tick > cur {
			continue
		}
		delete(d.slots, tick)
		for c := range slot {
			c.tick = 0
			if c.deadline <= ns {
				c.deadline = 0
				expired = append(expired, c)
				continue
			}
			d.file(c, tickOf(time.Unix(0, c.deadline)))
		}
	}
	return expired
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
