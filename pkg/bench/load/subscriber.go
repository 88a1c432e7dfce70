package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// ErrSubscribeRefused is returned when the broker answers SUBSCRIBE with a
// failure reason code.
var ErrSubscribeRefused = errors.New("subscribe refused")

// persistentExpiry is the Session Expiry Interval of persistent MQTT 5
// subscriber sessions: long enough for any run, short enough that a
// forgotten one goes away.
const persistentExpiry = 5 * time.Minute

// subscriber is one subscribing connection of a pub/sub run. Its counters
// and histogram belong to its reader goroutine until close returns.
type subscriber struct {
	idx   int
	topic string
	opts  ClientOptions
	qos   byte
	cl    *Client
	slots chan struct{} // pairs, closed loop: the publisher's end-to-end window

	ready   atomic.Bool // a probe arrived: the subscription is in effect
	closing atomic.Bool
	dead    chan struct{} // closed when the reader stops
	once    sync.Once

	hist                            *measure.Histogram
	seqs                            map[uint32]*seqState
	delivered, received             int64
	duplicates, outOfOrder, foreign int64
	disconnects                     int64
	lastPub                         uint32
	lastSeq                         *seqState
	expectPub                       uint32
}

// seqState is what a subscriber has received from one publisher.
type seqState struct {
	seen seqSet
	next uint64 // one past the highest sequence number received
}

func newSubscriber(cfg *PubSubConfig, runID string, idx int, topic func(int) string) *subscriber {
	s := &subscriber{
		idx:   idx,
		topic: topic(idx),
		qos:   byte(cfg.SubQoS),
		opts: ClientOptions{
			ClientID:   fmt.Sprintf("%s-%s-sub-%05d", cfg.ClientPrefix, runID, idx),
			Version:    byte(cfg.Version),
			Keepalive:  cfg.Keepalive,
			Username:   cfg.Username,
			Password:   cfg.Password,
			Persistent: cfg.Persistent,
		},
		dead: make(chan struct{}),
		hist: measure.NewHistogram(),
		seqs: map[uint32]*seqState{},
	}
	if cfg.Persistent {
		s.opts.SessionExpiry = persistentExpiry
	}
	if cfg.Workload == WorkloadPairs {
		s.expectPub = uint32(idx)
	}
	return s
}

// connect connects and subscribes, waiting for the SUBACK.
func (s *subscriber) connect(ctx context.Context, cfg *PubSubConfig) error {
	cl, err := Dial(ctx, cfg.Addr, s.opts)
	if err != nil {
		return err
	}
	sub := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: s.topic, Qos: s.qos}},
	}
	_ = cl.conn.SetDeadline(time.Now().Add(10 * time.Second))
	err = cl.WritePacket(sub)
	if err == nil {
		err = cl.Flush()
	}
	for err == nil {
		var pk packets.Packet
		pk, err = cl.ReadPacket()
		if err != nil || pk.FixedHeader.Type != packets.Suback {
			continue // a persistent session may get old messages first; they are not ours
		}
		if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] >= packets.ErrUnspecifiedError.Code {
			err = fmt.Errorf("%w: %s: reason codes %x", ErrSubscribeRefused, s.opts.ClientID, pk.ReasonCodes)
		}
		break
	}
	if err != nil {
		_ = cl.Close()
		if errors.Is(err, ErrSubscribeRefused) {
			return err
		}
		return fmt.Errorf("subscribing %s to %s: %w", s.opts.ClientID, s.topic, err)
	}
	_ = cl.conn.SetDeadline(time.Time{})
	s.cl = cl
	return nil
}

// read handles everything the broker sends until the connection ends.
func (s *subscriber) read(clock *runClock) {
	defer close(s.dead)
	cl := s.cl
	flush := false
	for {
		pk, err := cl.ReadPacket()
		if err != nil {
			if !s.closing.Load() {
				s.disconnects++
			}
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			if pk.FixedHeader.Qos > 0 {
				err = cl.writePuback(pk.PacketID)
				flush = true
			}
			s.receive(pk.Payload, clock)
		case packets.Disconnect:
			if !s.closing.Load() {
				s.disconnects++
			}
			return
		}
		if err == nil && flush && !cl.Buffered() {
			err, flush = cl.Flush(), false
		}
		if err != nil {
			if !s.closing.Load() {
				s.disconnects++
			}
			return
		}
	}
}

// receive accounts for one message.
func (s *subscriber) receive(payload []byte, clock *runClock) {
	st, ok := readStamp(payload)
	if ok && st.pub == probePub {
		s.ready.Store(true)
		return
	}
	now, running := clock.now()
	if !ok || !running || st.pub != s.expectPub {
		s.foreign++
		return
	}
	q := s.lastSeq
	if q == nil || s.lastPub != st.pub {
		q = s.seqs[st.pub]
		if q == nil {
			q = &seqState{}
			s.seqs[st.pub] = q
		}
		s.lastPub, s.lastSeq = st.pub, q
	}
	if !q.seen.add(st.seq) {
		s.duplicates++
		return
	}
	if st.seq+1 < q.next {
		s.outOfOrder++
	}
	q.next = max(q.next, st.seq+1)
	s.received++
	clock.received.Add(1)
	clock.noteLast(now)
	if clock.inWindow(now) {
		s.delivered++
	}
	if clock.inWindow(st.at) {
		s.hist.Record(time.Duration(now - st.at))
	}
	if s.slots != nil {
		select {
		case <-s.slots:
		default:
		}
	}
}

// seen returns the set of sequence numbers received from publisher pub.
func (s *subscriber) seen(pub uint32) *seqSet {
	if q := s.seqs[pub]; q != nil {
		return &q.seen
	}
	return &seqSet{}
}

// close disconnects and waits for the reader; it is idempotent.
func (s *subscriber) close() {
	s.once.Do(func() {
		if s.cl == nil {
			close(s.dead)
			return
		}
		s.closing.Store(true)
		_ = s.cl.Disconnect()
		<-s.dead
	})
}
