package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/workers"
)

// Delivery is one message for one client's offline queue.
type Delivery struct {
	ClientID string
	// Message is the encoded message; the store does not look into it.
	Message []byte
	// Expiry is when the message expires [MQTT-3.3.2-5]; zero means never.
	Expiry time.Time
	// Subscriptions are the subscriptions the message matched (FilterKey
	// of each). When set, the message is queued only if the session still
	// holds one of them: a dispatcher whose index lags (a subscription
	// removed, a session expired or started clean) cannot queue into a
	// session that no longer asked for it. Empty: no check.
	Subscriptions []FilterKey
}

// Outcome is what Enqueue did with one delivery.
type Outcome uint8

const (
	// OutcomeQueued: the message was appended to the queue.
	OutcomeQueued Outcome = iota
	// OutcomeDroppedOldest: the queue was full, so (with drop-oldest) the
	// oldest messages were evicted and the message was appended.
	OutcomeDroppedOldest
	// OutcomeDroppedNewest: the queue was full (with drop-newest), or the
	// message alone exceeds session.max-queued-bytes: it was not queued.
	OutcomeDroppedNewest
	// OutcomeNoSession: the client has no session; nothing was written.
	OutcomeNoSession
	// OutcomeFailed: Redis failed; EnqueueResult.Err says why.
	OutcomeFailed
	// OutcomeNotSubscribed: the session holds none of the delivery's
	// subscriptions any more; nothing was written.
	OutcomeNotSubscribed
	// OutcomeDirect: the session is connected with an empty queue and room
	// in its window, so the message went straight into its inflight hash
	// with a packet id (EnqueueResult.PacketID, .Seq): the node that holds
	// the connection writes it from the notice, without taking it.
	OutcomeDirect
	// OutcomeHeld (EnqueueHolding only): the session is connected and its
	// queue is at a bound, so nothing was written for this delivery nor
	// for the client's later ones in the call (which are held too, to keep
	// their order): the caller may try them again once the connection has
	// taken some, instead of evicting or refusing.
	OutcomeHeld
)

// String returns the outcome as a metric label value.
func (o Outcome) String() string {
	switch o {
	case OutcomeQueued:
		return "queued"
	case OutcomeDroppedOldest:
		return "dropped_oldest"
	case OutcomeDroppedNewest:
		return "dropped_newest"
	case OutcomeNoSession:
		return "no_session"
	case OutcomeFailed:
		return "failed"
	case OutcomeNotSubscribed:
		return "not_subscribed"
	case OutcomeDirect:
		return "direct"
	case OutcomeHeld:
		return "held"
	}
	return "unknown"
}

// EnqueueResult is the outcome of one delivery.
type EnqueueResult struct {
	Outcome Outcome
	// Evicted is how many older messages drop-oldest removed.
	Evicted int
	// Node is the node the session is connected to when the message was
	// queued, "" when it is disconnected: the node to notify.
	Node string
	// With OutcomeDirect: the connection's epoch, and the packet id and
	// sequence number the message got.
	Epoch    uint64
	PacketID uint16
	Seq      uint64
	// Err is set with OutcomeFailed.
	Err error
}

// encodeEntry lays a queue entry out as "<expiry unix ms, 0 = never>|<message>".
func encodeEntry(msg []byte, expiry time.Time) string {
	var ms int64
	if !expiry.IsZero() {
		ms = expiry.UnixMilli()
		if ms <= 0 {
			ms = 1
		}
	}
	return strconv.FormatInt(ms, 10) + "|" + string(msg)
}

func decodeEntry(v string) (msg []byte, expiry time.Time, err error) {
	exp, m, ok := strings.Cut(v, "|")
	ms, perr := strconv.ParseInt(exp, 10, 64)
	if !ok || perr != nil {
		return nil, time.Time{}, errors.New("malformed queue entry")
	}
	if ms > 0 {
		expiry = time.UnixMilli(ms)
	}
	return []byte(m), expiry, nil
}

// decodeInflight decodes one field and value of the inflight hash: packet
// id → "<seq>|<state>|<queue entry>", state P (published, awaiting PUBACK or
// PUBREC) or R (PUBREC received, the message dropped).
func decodeInflight(field, v string) (InflightMessage, error) {
	pid, err := strconv.ParseUint(field, 10, 16)
	seqS, rest, ok := strings.Cut(v, "|")
	seq, serr := strconv.ParseUint(seqS, 10, 64)
	if err != nil || !ok || serr != nil || len(rest) < 2 || rest[1] != '|' {
		return InflightMessage{}, fmt.Errorf("malformed entry %q", field)
	}
	msg, exp, err := decodeEntry(rest[2:])
	if err != nil {
		return InflightMessage{}, err
	}
	im := InflightMessage{QueuedMessage: QueuedMessage{PacketID: uint16(pid), Seq: seq, Message: msg, Expiry: exp}, Released: rest[0] == 'R'}
	if im.Released {
		// PUBREC received: the message was dropped, its expiry with it
		// (the scripts write "R|0|").
		im.Message, im.Expiry = nil, time.Time{}
	}
	return im, nil
}

// luaEntryLen is the message size of a queue entry (what qbytes counts).
const luaEntryLen = `
local function mlen(v)
  return #v - string.find(v, '|', 1, true)
end
`

// directMaxBytes is the largest message handed over directly
// (OutcomeDirect); larger ones go through the queue, so that notices, which
// carry direct messages, stay small.
const directMaxBytes = "65536"

// enqueueScript appends the messages of one session, in order, in one
// call: KEYS are the session, queue, subscriptions and inflight keys;
// ARGV[1..4] are the queue's message and byte bounds, the full-queue policy
// ('o' or 'n') and whether direct delivery is on ('1'); ARGV[5] is the hold
// token (empty when the call must not hold) and ARGV[6] the call's place among
// the calls of its session in one pipeline ('o' the only one, 'f' first,
// 'm' in the middle, 'l' last); then each message is <entry> <length> <n>
// <n subscription fields>. It answers six values per message: outcome,
// evicted, node, and for OutcomeDirect the epoch, packet id and sequence
// number (an empty string and 0 otherwise).
//
// Once a message of the call is queued, the later ones cannot go direct
// (the queue is no longer empty), so the session's order holds. Once one is
// held (a connected session at its queue's bound, with a hold token), every
// later one is held too; and since the connection may take messages between
// two calls of one pipeline, a holding call that others of its session
// follow leaves a mark (the field held:<token>), so that they hold as well
// and none lands ahead of what was held. The last call removes it.
var enqueueScript = redis.NewScript(luaPrelude + luaEntryLen + luaPids + `
local maxm, maxb, policy, direct = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local hold, pos = ARGV[5], ARGV[6]
local out = {}
local function put(o, ev, node, e, pid, sq)
  local k = #out
  out[k+1], out[k+2], out[k+3], out[k+4], out[k+5], out[k+6] = o, ev, node, e, pid, sq
end
-- Every session hash has an epoch (Connect writes it, every other write is
-- fenced by it): without one there is no session.
local h = redis.call('HMGET', KEYS[1], 'connected', 'node', 'qbytes', 'win', 'pid', 'seq', 'epoch', 'shared')
if not h[7] then
  local i = 7
  while i <= #ARGV do
    put(3, 0, '', '', 0, '')
    i = i + 3 + tonumber(ARGV[i+2])
  end
  return out
end
local node = ''
if h[1] == '1' then node = h[2] or '' end
local qb, win = tonumber(h[3] or '0'), tonumber(h[4] or '0')
local pid, seq, epoch = tonumber(h[5] or '0'), tonumber(h[6] or '0'), h[7] or '0'
local n = redis.call('LLEN', KEYS[2])
local infl = -1 -- HLEN of the inflight hash, read when first needed
local handed, queued = false, false
local holding = false
local subok = {} -- subscription field -> whether the session holds it
local pids = nil -- the packet id picker, made at the first hand-over
local hs = {} -- the inflight fields and values handed over
if hold ~= '' and (pos == 'm' or pos == 'l') then
  holding = redis.call('HEXISTS', KEYS[1], 'held:' .. hold) == 1
end
local i = 7
while i <= #ARGV do
  local entry, len, ns = ARGV[i], tonumber(ARGV[i+1]), tonumber(ARGV[i+2])
  local first, last = i + 3, i + 2 + ns
  i = last + 1
  local held = ns == 0
  if not holding then
    for j = first, last do
      local ok = subok[ARGV[j]]
      if ok == nil then
        ok = redis.call('HEXISTS', KEYS[3], ARGV[j]) == 1
        subok[ARGV[j]] = ok
      end
      if ok then held = true; break end
    end
  end
  if holding then
    put(7, 0, '', '', 0, '')
  elseif not held then
    put(5, 0, '', '', 0, '')
  elseif len > maxb then
    put(2, 0, '', '', 0, '')
  else
    local gone = false
    if node ~= '' and n == 0 and win > 0 and direct and len <= ` + directMaxBytes + ` then
      if infl < 0 then infl = redis.call('HLEN', KEYS[4]) end
      if infl < win then
        if not pids then
          -- At most one id per message left, and the window's room.
          local left, j = 0, first - 3
          while j <= #ARGV do
            left = left + 1
            j = j + 3 + tonumber(ARGV[j+2])
          end
          pids = picker(KEYS[4], pid, math.min(left, win - infl))
        end
        pid = nextpid(pids)
        seq = seq + 1
        local sq = string.format('%d', seq)
        hs[#hs + 1] = string.format('%d', pid)
        hs[#hs + 1] = sq .. '|P|' .. entry
        infl = infl + 1
        handed = true
        put(6, 0, node, epoch, pid, sq)
        gone = true
      end
    end
    if not gone then
      local evicted = 0
      if n + 1 > maxm or qb + len > maxb then
        if hold ~= '' and node ~= '' then
          holding = true
          put(7, 0, '', '', 0, '')
          gone = true
        elseif policy == 'n' then
          put(2, 0, '', '', 0, '')
          gone = true
        else
          while n > 0 and (n + 1 > maxm or qb + len > maxb) do
            qb = qb - mlen(redis.call('LPOP', KEYS[2]))
            n = n - 1
            evicted = evicted + 1
          end
        end
      end
      if not gone then
        redis.call('RPUSH', KEYS[2], entry)
        qb = qb + len
        n = n + 1
        queued = true
        if evicted > 0 then put(1, evicted, node, '', 0, '') else put(0, 0, node, '', 0, '') end
      end
    end
  end
end
-- A connected session's keys have no TTL (Connect removes it, only
-- Disconnect sets one): the keys written follow the session's TTL only when
-- it is disconnected, and messages are handed over only to connected ones.
if handed then
  hsetall(KEYS[4], hs)
  redis.call('HSET', KEYS[1], 'pid', string.format('%d', pid), 'seq', string.format('%d', seq))
end
if queued then
  redis.call('HSET', KEYS[1], 'qbytes', string.format('%d', qb))
  if node == '' then
    if h[8] == '1' then follow(KEYS[2], ` + sharedHoldMillis + `) else follow(KEYS[2]) end
  end
end
if pos == 'l' then
  redis.call('HDEL', KEYS[1], 'held:' .. hold)
elseif holding and (pos == 'f' or pos == 'm') then
  redis.call('HSET', KEYS[1], 'held:' .. hold, '1')
end
return out
`)

// maxEnqueueBatch bounds the messages of one session in one script call, so
// that a burst to one session does not hold Redis for long.
const maxEnqueueBatch = 64

// Enqueue appends each delivery to its client's offline queue, all in one
// pipeline: the deliveries of a client go in one atomic script on its slot
// (maxEnqueueBatch at most per call), in the order of ds. A delivery to a
// client without a session creates nothing (OutcomeNoSession). The queue is
// bounded by session.max-queued-messages and session.max-queued-bytes (the
// sum of message sizes); at a bound session.queue-full-policy decides. A
// queue of a disconnected session expires with the session.
//
// The results are in the order of ds. The error is the first failure;
// results of failed deliveries have OutcomeFailed and may be retried alone.
func (s *Store) Enqueue(ctx context.Context, ds []Delivery) ([]EnqueueResult, error) {
	return s.enqueue(ctx, ds, nil)
}

// EnqueueHolding is Enqueue, except that a delivery to a connected session
// whose queue is at a bound, for a client hold approves, is neither queued
// nor dropped: it comes back as OutcomeHeld, and so do the client's later
// deliveries in ds (from the first held one on, in order), for the caller
// to try again once the connection has taken some of its queue. A
// subscriber that reads as fast as messages arrive then loses nothing to a
// burst (a dispatcher catching up after a failover routes seconds of
// traffic at once); the caller bounds how long it waits. hold may be called
// from several goroutines at once (a large call goes as several pipelines).
func (s *Store) EnqueueHolding(ctx context.Context, ds []Delivery, hold func(clientID string) bool) ([]EnqueueResult, error) {
	return s.enqueue(ctx, ds, hold)
}

// holdTokens makes the tokens of EnqueueHolding's calls: unique per call
// across processes, so that the marks of two calls never meet.
var holdTokens = struct {
	prefix string
	n      atomic.Uint64
}{prefix: strconv.FormatUint(rand.Uint64(), 36)}

func (s *Store) enqueue(ctx context.Context, ds []Delivery, hold func(clientID string) bool) ([]EnqueueResult, error) {
	res := make([]EnqueueResult, len(ds))
	token := ""
	if hold != nil {
		token = holdTokens.prefix + "." + strconv.FormatUint(holdTokens.n.Add(1), 36)
	}
	policy := "o"
	if s.cfg.QueueFullPolicy == DropNewest {
		policy = "n"
	}
	direct := "0"
	if s.direct {
		direct = "1"
	}
	maxm, maxb := strconv.FormatInt(s.maxMsg, 10), strconv.FormatInt(s.maxB, 10)
	calls := enqueueCalls(ds)
	var firstErr error
	fail := func(idx []int, err error) {
		for _, i := range idx {
			res[i] = EnqueueResult{Outcome: OutcomeFailed, Err: err}
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	for attempt := 0; len(calls) > 0; attempt++ {
		cmds := make([]*redis.Cmd, len(calls))
		pos := holdPositions(ds, calls, hold)
		send := func(part []int) {
			// The pipeline's own error repeats the first command error,
			// which is handled per command below.
			_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, c := range part {
					idx := calls[c]
					cid := ds[idx[0]].ClientID
					tok := ""
					if hold != nil && hold(cid) {
						tok = token
					}
					args := []any{maxm, maxb, policy, direct, tok, pos[c]}
					for _, i := range idx {
						d := ds[i]
						args = append(args, encodeEntry(d.Message, d.Expiry), len(d.Message), len(d.Subscriptions))
						for _, k := range d.Subscriptions {
							args = append(args, k.field())
						}
					}
					cmds[c] = enqueueScript.EvalSha(ctx, p, []string{sessionKey(cid), queueKey(cid), subsKey(cid), inflightKey(cid)}, args...)
				}
				return nil
			})
		}
		parts := splitCalls(ds, calls)
		var wg sync.WaitGroup
		for _, part := range parts[1:] {
			wg.Add(1)
			workers.Go(func() {
				defer wg.Done()
				send(part)
			})
		}
		send(parts[0])
		wg.Wait()
		var retry [][]int
		for c, cmd := range cmds {
			idx := calls[c]
			v, err := cmd.Slice()
			if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
				retry = append(retry, idx)
				continue
			}
			if err == nil {
				err = parseEnqueueReply(v, res, idx)
			}
			if err != nil {
				fail(idx, fmt.Errorf("enqueueing for %s: %w", ds[idx[0]].ClientID, err))
			}
		}
		if len(retry) > 0 {
			// Redis lost its script cache (restart, failover, new shard).
			if err := LoadScript(ctx, s.rdb, enqueueScript); err != nil {
				err = fmt.Errorf("loading enqueue script: %w", err)
				for _, idx := range retry {
					fail(idx, err)
				}
				return res, firstErr
			}
		}
		calls = retry
	}
	return res, firstErr
}

// holdPositions returns the place of each call among the calls of its
// client in one pipeline, as the enqueue script's ARGV[6] ('o' for a client
// with one call, or whose deliveries may not be held).
// enqueueCalls groups the indexes of ds into script calls: one per client
// (per maxEnqueueBatch of its deliveries), in the order of each client's
// first delivery.
func enqueueCalls(ds []Delivery) [][]int {
	var calls [][]int
	open := make(map[string]int, len(ds))
	for i, d := range ds {
		c, ok := open[d.ClientID]
		if !ok || len(calls[c]) == maxEnqueueBatch {
			c = len(calls)
			open[d.ClientID] = c
			calls = append(calls, make([]int, 0, 1))
		}
		calls[c] = append(calls[c], i)
	}
	return calls
}

// pipelineBytes is about what Redis reads of a connection in one turn of
// its event loop (16 KiB, PROTO_IOBUF_LEN), and with appendfsync always
// every turn that wrote ends in an fsync of the append-only file. A larger
// enqueue goes as several pipelines at once, each on a connection of its
// own, so that Redis reads them in the same turns: a dispatcher's batch of
// 100 KiB cost seven turns, and seven fsyncs, as one pipeline.
// maxPipelines bounds the connections one enqueue takes from the pool.
const (
	pipelineBytes = 16 << 10
	maxPipelines  = 8
)

// splitCalls groups the indexes of calls into pipelines of about
// pipelineBytes of messages each (at most maxPipelines, and no more than
// there are clients). All the calls of a client go in one pipeline, in
// order: Redis runs a connection's commands in the order sent, and a
// client's later calls must land after its earlier ones (holdPositions).
// Each client goes to the pipeline with the fewest bytes so far.
func splitCalls(ds []Delivery, calls [][]int) [][]int {
	total := 0
	for _, d := range ds {
		total += len(d.Message)
	}
	n := min(maxPipelines, (total+pipelineBytes-1)/pipelineBytes, len(calls))
	var bytesOf map[string]int
	if n > 1 {
		bytesOf = make(map[string]int, len(calls))
		for _, d := range ds {
			bytesOf[d.ClientID] += len(d.Message)
		}
		n = min(n, len(bytesOf))
	}
	if n <= 1 {
		all := make([]int, len(calls))
		for c := range all {
			all[c] = c
		}
		return [][]int{all}
	}
	loads := make([]int, n)
	parts := make([][]int, n)
	partOf := make(map[string]int, len(bytesOf))
	for c, idx := range calls {
		cid := ds[idx[0]].ClientID
		p, ok := partOf[cid]
		if !ok {
			p = 0
			for q := range loads {
				if loads[q] < loads[p] {
					p = q
				}
			}
			partOf[cid] = p
			loads[p] += bytesOf[cid]
		}
		parts[p] = append(parts[p], c)
	}
	return slices.DeleteFunc(parts, func(part []int) bool { return len(part) == 0 })
}

func holdPositions(ds []Delivery, calls [][]int, hold func(clientID string) bool) []string {
	pos := make([]string, len(calls))
	for c := range pos {
		pos[c] = "o"
	}
	if hold == nil {
		return pos
	}
	// Most clients have one call: only those with more need a place.
	last := make(map[string]int, len(calls))
	for c, idx := range calls {
		cid := ds[idx[0]].ClientID
		if prev, ok := last[cid]; ok {
			if pos[prev] == "o" {
				pos[prev] = "f"
			} else {
				pos[prev] = "m"
			}
			pos[c] = "l"
		}
		last[cid] = c
	}
	for c := range pos {
		if pos[c] != "o" && !hold(ds[calls[c][0]].ClientID) {
			pos[c] = "o"
		}
	}
	return pos
}

// parseEnqueueReply fills res[idx[k]] from the six values of message k of
// an enqueue script's reply.
func parseEnqueueReply(v []any, res []EnqueueResult, idx []int) error {
	if len(v) != 6*len(idx) {
		return fmt.Errorf("unexpected reply of %d values for %d messages", len(v), len(idx))
	}
	for k, i := range idx {
		r := v[6*k : 6*k+6]
		outcome, ok1 := r[0].(int64)
		evicted, ok2 := r[1].(int64)
		node, ok3 := r[2].(string)
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("unexpected reply %v", r)
		}
		er := EnqueueResult{Outcome: Outcome(outcome), Evicted: int(evicted), Node: node}
		if er.Outcome == OutcomeDirect {
			e, _ := r[3].(string)
			pid, _ := r[4].(int64)
			sq, _ := r[5].(string)
			var perr, serr error
			er.Epoch, perr = strconv.ParseUint(e, 10, 64)
			er.Seq, serr = strconv.ParseUint(sq, 10, 64)
			if perr != nil || serr != nil || pid <= 0 || pid > 65535 {
				return fmt.Errorf("unexpected reply %v", r)
			}
			er.PacketID = uint16(pid)
		}
		res[i] = er
	}
	return nil
}

// QueuedMessage is a message taken from the queue into the inflight hash.
type QueuedMessage struct {
	// PacketID is the outbound packet id assigned to it.
	PacketID uint16
	// Seq is its place in the session's outbound order: messages are
	// written to the client in Seq order, whether taken from the queue or
	// handed over directly (OutcomeDirect).
	Seq     uint64
	Message []byte
	// Expiry is when the message expires, zero for never; the remaining time
	// is the Message Expiry Interval to send [MQTT-3.3.2-6].
	Expiry time.Time
}

// InflightMessage is an outbound message awaiting its acknowledgement.
type InflightMessage struct {
	QueuedMessage
	// Released says PUBREC was received (PubrecReceived): resend PUBREL, not
	// the message, which is then empty.
	Released bool
}

// sortInflight puts inflight messages in the order Take assigned them.
func sortInflight(ms []InflightMessage) {
	slices.SortFunc(ms, func(a, b InflightMessage) int { return cmp.Compare(a.Seq, b.Seq) })
}

// Inflight returns the session's inflight messages in the order Take
// assigned them, for resending with DUP set after a reconnect
// [MQTT-4.4.0-1]. It is not fenced: it only reads.
func (s *Store) Inflight(ctx context.Context, clientID string) ([]InflightMessage, error) {
	m, err := s.rdb.HGetAll(ctx, inflightKey(clientID)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading inflight of %s: %w", clientID, err)
	}
	out := make([]InflightMessage, 0, len(m))
	for k, v := range m {
		im, err := decodeInflight(k, v)
		if err != nil {
			return nil, fmt.Errorf("reading inflight of %s: %w", clientID, err)
		}
		out = append(out, im)
	}
	sortInflight(out)
	return out, nil
}

// Pending is what a connected session's node needs to know to decide
// whether its pump has work nobody told it about (a lost notice).
type Pending struct {
	// Queued says the queue holds messages.
	Queued bool
	// Seq is the session's sequence counter: the newest message handed to
	// it, in flight now or acknowledged since.
	Seq uint64
}

// PendingOf reads Pending for each client id, in one pipeline: two reads
// per session and no script, so that a node can look at all its sessions
// every poll interval for little.
func (s *Store) PendingOf(ctx context.Context, clientIDs []string) ([]Pending, error) {
	lens := make([]*redis.IntCmd, len(clientIDs))
	seqs := make([]*redis.StringCmd, len(clientIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range clientIDs {
			lens[i] = p.LLen(ctx, queueKey(id))
			seqs[i] = p.HGet(ctx, sessionKey(id), "seq")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading the pending work of %d sessions: %w", len(clientIDs), err)
	}
	out := make([]Pending, len(clientIDs))
	for i := range clientIDs {
		out[i].Queued = lens[i].Val() > 0
		if v := seqs[i].Val(); v != "" { // none yet: an idle clean session (no error made)
			out[i].Seq, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return out, nil
}
