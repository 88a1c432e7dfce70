package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// receiveRetained is phase 2: a fresh client subscribes to the wildcard
// filter and counts the retained messages in, acknowledging each at once,
// while the broker's memory is sampled. startHook runs just before the
// SUBSCRIBE is sent.
func receiveRetained(ctx context.Context, cfg *RetainedConfig, res *RetainedResult, startHook func(), progress func(string)) error {
	cl, err := Dial(ctx, cfg.Addr, ClientOptions{
		ClientID:  fmt.Sprintf("%s-%08x-sub", cfg.ClientPrefix, res.RunID),
		Version:   byte(cfg.Version),
		Keepalive: cfg.Keepalive,
		Username:  cfg.Username,
		Password:  cfg.Password,
	})
	if err != nil {
		return fmt.Errorf("retained subscriber: %w", err)
	}
	defer func() { _ = cl.Disconnect() }()

	r := &res.RetainedReceive
	r.Expected = int64(cfg.Messages)
	sampler := newMemorySampler(cfg)
	sampler.baseline(ctx)
	samplerCtx, stopSampler := context.WithCancel(ctx)
	samplerDone := sampler.run(samplerCtx)
	serverBefore, benchBefore := measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
	startHook()

	var seen seqSet
	var last time.Time
	stopProgress := everyFewSeconds(ctx, func() {
		progress(fmt.Sprintf("wildcard SUBSCRIBE: %d of %d so far", seen.len(), cfg.Messages))
	})
	err = cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: cfg.filter(), Qos: byte(cfg.SubQoS)}},
	})
	t0 := time.Now()
	if err == nil {
		err = cl.Flush()
	}
	if err == nil {
		err = countRetained(cl, cfg, res.RunID, t0, r, &seen, &last)
	}
	end := time.Now()
	stopProgress()
	serverAfter, benchAfter := measure.SampleProcess(cfg.ServerPID), measure.SelfCPUTime()
	stopSampler()
	<-samplerDone
	if err != nil {
		return err
	}
	r.Memory = sampler.result()
	r.Unique = seen.len()
	r.Missing = r.Expected - r.Unique
	r.Complete = r.Missing == 0
	r.Wall = end.Sub(t0)
	if !last.IsZero() {
		r.LastAfter = last.Sub(t0)
		r.PerSec = float64(r.Unique) / r.LastAfter.Seconds()
	}
	r.Bench = measure.Usage(benchAfter-benchBefore, r.Wall, r.Unique)
	if serverBefore.OK && serverAfter.OK {
		u := measure.Usage(serverAfter.CPU-serverBefore.CPU, r.Wall, r.Unique)
		u.RSS = serverAfter.RSS
		r.Server = &u
	}
	return nil
}

// countRetained reads until every message has arrived, none came for the
// idle timeout, or the receive timeout passed. It fails only on a refused
// SUBSCRIBE or a connection the broker closed.
func countRetained(cl *Client, cfg *RetainedConfig, run uint32, t0 time.Time, r *RetainedReceive, seen *seqSet, last *time.Time) error {
	limit := t0.Add(cfg.ReceiveTimeout)
	var deadlineSet time.Time
	var topicBuf []byte
	for seen.len() < int64(cfg.Messages) {
		// Moving the deadline on every packet would cost a timer update
		// each; every 100 ms is close enough to the idle timeout.
		if now := time.Now(); now.Sub(deadlineSet) > 100*time.Millisecond {
			deadlineSet = now
			d := now.Add(cfg.IdleTimeout)
			if d.After(limit) {
				d = limit
			}
			_ = cl.SetReadDeadline(d)
		}
		pk, err := cl.ReadPacket()
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				r.End = retainedEndIdle
				if !time.Now().Before(limit) {
					r.End = retainedEndTimeout
				}
				return nil
			}
			return fmt.Errorf("wildcard subscriber after %d messages: %w", seen.len(), err)
		}
		switch pk.FixedHeader.Type {
		case packets.Suback:
			r.SubackAfter = time.Since(t0)
			if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] >= packets.ErrUnspecifiedError.Code {
				return fmt.Errorf("%w: %s: reason codes %x", ErrSubscribeRefused, cfg.filter(), pk.ReasonCodes)
			}
		case packets.Publish:
			r.Received++
			if pk.FixedHeader.Qos > 0 {
				if err := cl.writePuback(pk.PacketID); err != nil {
					return err
				}
			}
			got, i, ok := readRetainedStamp(pk.Payload)
			topicBuf = appendRetainedTopic(topicBuf[:0], cfg, i)
			if !ok || got != run || i >= cfg.Messages || pk.TopicName != string(topicBuf) {
				r.Foreign++
			} else if !seen.add(uint64(i)) {
				r.Duplicates++
			} else {
				now := time.Now()
				if seen.len() == 1 {
					r.FirstAfter = now.Sub(t0)
				}
				for len(r.Tenths) < 10 && seen.len()*10 >= int64((len(r.Tenths)+1)*cfg.Messages) {
					r.Tenths = append(r.Tenths, now.Sub(t0))
				}
				*last = now
				if !pk.FixedHeader.Retain {
					r.NotRetained++
				}
			}
		}
		// Acknowledge what was read before waiting for more.
		if !cl.Buffered() {
			if err := cl.Flush(); err != nil {
				return err
			}
		}
	}
	r.End = retainedEndComplete
	return cl.Flush()
}

// appendRetainedTopic appends message i's topic to b, as
// RetainedConfig.topic writes it.
func appendRetainedTopic(b []byte, cfg *RetainedConfig, i int) []byte {
	b = append(b, strings.TrimSuffix(cfg.TopicPrefix, "/")...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(i/1000), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, int64(i), 10)
}

// memorySampler reads a broker's RSS (/proc) and Go heap (its Prometheus
// /metrics) every interval, each in a goroutine of its own so that a slow
// scrape of a busy broker does not delay the RSS samples.
type memorySampler struct {
	pid      int
	url      string
	interval time.Duration
	http     *http.Client

	mu sync.Mutex // guards m once run started
	m  RetainedMemory
}

func newMemorySampler(cfg *RetainedConfig) *memorySampler {
	s := &memorySampler{pid: cfg.ServerPID, interval: cfg.SampleInterval}
	if a := cfg.MetricsAddr; a != "" {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		s.url = strings.TrimSuffix(a, "/") + "/metrics"
		s.http = &http.Client{Timeout: 5 * time.Second}
	}
	return s
}

// baseline takes the samples before the SUBSCRIBE.
func (s *memorySampler) baseline(ctx context.Context) {
	if s.pid > 0 {
		if rss, err := measure.ReadRSS(s.pid); err == nil {
			s.m.BaselineRSS, s.m.PeakRSS = rss, rss
			s.m.RSSSamples++
		} else {
			s.fail(err)
		}
	}
	if s.url != "" {
		if h, err := s.readHeap(ctx); err == nil {
			s.m.BaselineHeap, s.m.PeakHeap = h.alloc, h.alloc
			s.m.BaselineHeapInuse, s.m.PeakHeapInuse = h.inuse, h.inuse
			s.m.BaselineNextGC, s.m.PeakNextGC = h.nextGC, h.nextGC
			s.m.HeapSamples++
		} else {
			s.fail(err)
		}
	}
}

// run samples until ctx ends; the returned channel is closed when both
// samplers have stopped, after a last sample each.
func (s *memorySampler) run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(sample func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(s.interval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					sample()
				case <-ctx.Done():
					sample()
					return
				}
			}
		}()
	}
	if s.pid > 0 {
		loop(func() {
			rss, err := measure.ReadRSS(s.pid)
			s.mu.Lock()
			defer s.mu.Unlock()
			if err != nil {
				s.failLocked(err)
				return
			}
			s.m.PeakRSS = max(s.m.PeakRSS, rss)
			s.m.RSSSamples++
		})
	}
	if s.url != "" {
		loop(func() {
			// The last sample is taken after ctx ended: give it a context
			// of its own.
			h, err := s.readHeap(context.WithoutCancel(ctx))
			s.mu.Lock()
			defer s.mu.Unlock()
			if err != nil {
				s.failLocked(err)
				return
			}
			s.m.PeakHeap = max(s.m.PeakHeap, h.alloc)
			s.m.PeakHeapInuse = max(s.m.PeakHeapInuse, h.inuse)
			s.m.PeakNextGC = max(s.m.PeakNextGC, h.nextGC)
			s.m.HeapSamples++
		})
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

func (s *memorySampler) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

// failLocked counts a failed read; s.mu must be held.
func (s *memorySampler) failLocked(err error) {
	s.m.SampleErrors++
	if s.m.SampleError == "" {
		s.m.SampleError = err.Error()
	}
}

func (s *memorySampler) result() RetainedMemory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

// heapSample is one reading of a Go broker's heap gauges.
type heapSample struct{ alloc, inuse, nextGC int64 }

// heapGauges are the gauges of /metrics a heapSample holds.
var heapGauges = []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_next_gc_bytes"}

// readHeap scrapes the heap gauges off the broker's /metrics.
func (s *memorySampler) readHeap(ctx context.Context) (heapSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return heapSample{}, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return heapSample{}, fmt.Errorf("reading the go heap: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return heapSample{}, fmt.Errorf("reading the go heap: %s: %s", s.url, resp.Status)
	}
	return parseHeapMetrics(bufio.NewScanner(resp.Body))
}

// parseHeapMetrics finds the heapGauges in the Prometheus text format.
func parseHeapMetrics(sc *bufio.Scanner) (heapSample, error) {
	var h heapSample
	found := map[string]bool{}
	for sc.Scan() && len(found) < len(heapGauges) {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case heapGauges[0]:
			dst = &h.alloc
		case heapGauges[1]:
			dst = &h.inuse
		case heapGauges[2]:
			dst = &h.nextGC
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return h, fmt.Errorf("parsing %s: %w", name, err)
		}
		*dst = int64(v)
		found[name] = true
	}
	if err := sc.Err(); err != nil {
		return h, fmt.Errorf("reading the go heap: %w", err)
	}
	if len(found) < len(heapGauges) {
		return h, fmt.Errorf("reading the go heap: /metrics lacks one of %s", strings.Join(heapGauges, ", "))
	}
	return h, nil
}
