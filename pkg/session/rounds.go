package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Round is the store work of one delivery round of one connected session:
// the acknowledgements its client sent, then the messages its window has
// room for. One script does all of it atomically, fenced by the epoch, and
// RunRounds sends the rounds of many sessions in one pipeline, so a node
// pays one Redis round trip for the deliveries of all its busy sessions.
type Round struct {
	ClientID string
	Epoch    uint64
	// Acks are outbound packet ids whose delivery is complete (PUBACK,
	// PUBCOMP, a refused PUBREC, a QoS 0 message written): they leave the
	// inflight hash. An unknown id is not an error.
	Acks []uint16
	// Pubrecs are outbound QoS 2 packet ids the client answered with
	// PUBREC: the message is dropped and, after a reconnect, Inflight
	// reports the id as Released so that PUBREL is sent again, not the
	// PUBLISH [MQTT-4.4.0-1]. An unknown id is not an error.
	Pubrecs []uint16
	// Take is the most messages to move from the head of the queue into
	// the inflight hash after the acknowledgements, in queue order; 0 takes
	// none. Expired messages are discarded instead [MQTT-3.3.2-5]. Outbound
	// packet ids cycle through 1..65535 from a per-session counter,
	// skipping 0 [MQTT-2.2.1-3] and ids still in flight [MQTT-2.2.1-4]; they
	// are a space of their own (inbound QoS 2 ids live in the rel set), so
	// the node must keep the two apart on the connection (mochi issue 545).
	// The inflight hash never grows beyond the session's window. Every
	// message taken is in flight until acknowledged, QoS 0 ones too: the
	// node acknowledges those itself once it wrote them.
	Take int

	// Taken are the messages taken, in queue order, with their packet ids
	// and sequence numbers (see Store.Take). Set by RunRounds.
	Taken []QueuedMessage
	// Seq is the session's sequence counter after a round that took (the
	// sequence number of the newest message in flight), 0 without a take:
	// a node that wrote fewer messages has some to fetch from Inflight (a
	// notice with direct messages was lost, or is still on its way).
	Seq uint64
	// Full: the take stopped at the session's window with messages left
	// in the queue, so fewer than Take were taken although the queue is
	// not empty (the window holds messages handed to the session directly
	// that the node has not written yet). Set by RunRounds.
	Full bool
	// Err is why the round failed (ErrFenced when the session moved on):
	// then nothing was taken, and the acknowledgements are to be sent
	// again (recording one twice is harmless). Set by RunRounds.
	Err error
}

// luaPids picks outbound packet ids. A picker starts after the session's
// counter pid and hands out the ids that follow it in 1..65535, skipping 0
// [MQTT-2.2.1-3] and those in the inflight hash key [MQTT-2.2.1-4]. It reads
// the candidates with HMGET, up to 1,000 per call and m in all (m: the most
// ids the script can need), then any more one HEXISTS at a time (and a
// single one too: an HMGET's reply, a Lua table, costs Redis more than an
// HEXISTS for one id; BenchmarkDeliveryScripts). The caller
// writes the ids handed out after it (hsetall: one HSET per 1,000): an id
// handed out in the same script is not met again, since a script never
// steps over more ids than the window it fills holds (at most 65535). Ids
// go to Redis as integer strings (string.format('%d')), which Redis need
// not format from a Lua number (a double) as it does a numeric redis.call
// argument. unpack's bound on the Lua stack is 8,000 values.
const luaPids = `
local function picker(key, pid, m)
  return {key = key, pid = pid, m = m, read = 0, i = 0, free = {}}
end
local function nextpid(p)
  while true do
    if p.i == #p.free then
      -- One id is cheaper to check with HEXISTS.
      if p.m - p.read < 2 then break end
      local ids, q = {}, p.pid
      for k = 1, math.min(p.m - p.read, 1000) do
        q = q % 65535 + 1
        ids[k] = string.format('%d', q)
      end
      p.free, p.i = redis.call('HMGET', p.key, unpack(ids)), 0
      p.read = p.read + #ids
    end
    p.i = p.i + 1
    p.pid = p.pid % 65535 + 1
    if not p.free[p.i] then return p.pid end
  end
  repeat
    p.pid = p.pid % 65535 + 1
  until redis.call('HEXISTS', p.key, string.format('%d', p.pid)) == 0
  return p.pid
end
local function hsetall(key, fv)
  for j = 1, #fv, 2000 do
    redis.call('HSET', key, unpack(fv, j, math.min(j + 1999, #fv)))
  end
end
`

// luaTake moves up to max messages from the queue KEYS[2] into the
// inflight hash KEYS[3], never filling it beyond the session's window, and
// returns {seq counter, full, pid1, seq1, entry1, pid2, seq2, entry2, ...}
// (full: 1 when the window stopped it with messages left in the queue);
// KEYS[1] is the session hash. It pops as many as the window has room for
// at once (expired ones do not count) and writes them with one HSET.
const luaTake = `
local function take(max, now)
  local h = redis.call('HMGET', KEYS[1], 'pid', 'seq', 'qbytes', 'win')
  local pid, seq, qb = tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
  local cap = tonumber(h[4] or '0')
  if cap <= 0 or cap > 65535 then cap = 65535 end
  local out = {0, 0}
  local taken = 0
  local infl = redis.call('HLEN', KEYS[3])
  local p = nil
  local hs = {}
  while taken < max do
    local room = math.min(max - taken, cap - infl)
    if room <= 0 then
      if redis.call('LLEN', KEYS[2]) > 0 then out[2] = 1 end
      break
    end
    local vs = redis.call('LPOP', KEYS[2], room)
    if not vs then break end
    if not p then p = picker(KEYS[3], pid, room) end
    for _, v in ipairs(vs) do
      qb = qb - mlen(v)
      local exp = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
      if exp == 0 or exp > now then
        local id = nextpid(p)
        seq = seq + 1
        local sq = string.format('%d', seq)
        hs[#hs + 1] = string.format('%d', id)
        hs[#hs + 1] = sq .. '|P|' .. v
        out[#out + 1] = id
        out[#out + 1] = sq
        out[#out + 1] = v
        taken = taken + 1
        infl = infl + 1
      end
    end
    if #vs < room then break end
  end
  hsetall(KEYS[3], hs)
  if p then pid = p.pid end
  if qb < 0 then qb = 0 end
  redis.call('HSET', KEYS[1], 'pid', string.format('%d', pid), 'seq', string.format('%d', seq), 'qbytes', string.format('%d', qb))
  follow(KEYS[3])
  out[1] = string.format('%d', seq)
  return out
end
`

// roundScript: KEYS session, queue, inflight; ARGV epoch, number of acks,
// the acks, number of pubrecs, the pubrecs, take max, now (unix ms).
var roundScript = redis.NewScript(luaPrelude + luaEntryLen + luaPids + luaTake + `
local err = fence()
if err then return err end
local i = 2
local n = tonumber(ARGV[i])
-- One HDEL per 1,000 ids (unpack's bound on the Lua stack is 8,000).
for j = 1, n, 1000 do
  redis.call('HDEL', KEYS[3], unpack(ARGV, i + j, i + math.min(j + 999, n)))
end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  local id = ARGV[i + j]
  local v = redis.call('HGET', KEYS[3], id)
  if v then
    local p = string.find(v, '|', 1, true)
    redis.call('HSET', KEYS[3], id, string.sub(v, 1, p) .. 'R|0|')
  end
end
i = i + n + 1
local max = tonumber(ARGV[i])
if max <= 0 then return {} end
return take(max, tonumber(ARGV[i + 1]))
`)

func (s *Store) roundArgs(r *Round) (keys []string, args []any) {
	args = make([]any, 0, 5+len(r.Acks)+len(r.Pubrecs))
	args = append(args, epochArg(r.Epoch), len(r.Acks))
	for _, id := range r.Acks {
		args = append(args, id)
	}
	args = append(args, len(r.Pubrecs))
	for _, id := range r.Pubrecs {
		args = append(args, id)
	}
	args = append(args, r.Take, s.now().UnixMilli())
	return []string{sessionKey(r.ClientID), queueKey(r.ClientID), inflightKey(r.ClientID)}, args
}

// RunRounds runs rounds in one pipeline (on Redis Cluster, one per shard,
// in parallel) and sets each round's Taken and Err. Each round is atomic on
// its own; rounds of different sessions are independent. A Batcher with
// RunRounds as its Run shares the pipelines among a node's sessions.
func (s *Store) RunRounds(ctx context.Context, rounds []*Round) {
	cmds := evalAll(ctx, s.rdb, roundScript, len(rounds), func(i int) ([]string, []any) {
		return s.roundArgs(rounds[i])
	}, nil)
	for i, r := range rounds {
		r.Taken, r.Seq, r.Full, r.Err = nil, 0, false, nil
		v, err := cmds[i].Slice()
		if err != nil && !errors.Is(err, redis.Nil) {
			r.Err = fmt.Errorf("delivery round of %s: %w", r.ClientID, mapErr(err))
			continue
		}
		r.Taken, r.Seq, r.Full, r.Err = parseTaken(r.ClientID, v)
	}
}

// parseTaken decodes the reply of the take function: the messages taken,
// the sequence counter, and whether the window stopped it (Round.Full).
func parseTaken(clientID string, v []any) (_ []QueuedMessage, seq uint64, full bool, _ error) {
	if len(v) < 2 {
		return nil, 0, false, nil
	}
	counter, _ := v[0].(string)
	seq, err := strconv.ParseUint(counter, 10, 64)
	if err != nil {
		return nil, 0, false, fmt.Errorf("taking from queue of %s: sequence counter %q", clientID, counter)
	}
	f, _ := v[1].(int64)
	full = f == 1
	out := make([]QueuedMessage, 0, len(v)/3)
	for i := 2; i+2 < len(v); i += 3 {
		pid, _ := v[i].(int64)
		ms, _ := v[i+1].(string)
		entry, _ := v[i+2].(string)
		n, perr := strconv.ParseUint(ms, 10, 64)
		msg, exp, err := decodeEntry(entry)
		if err == nil && perr != nil {
			err = perr
		}
		if err != nil {
			return out, seq, full, fmt.Errorf("taking from queue of %s: %w", clientID, err)
		}
		out = append(out, QueuedMessage{PacketID: uint16(pid), Seq: n, Message: msg, Expiry: exp})
	}
	return out, seq, full, nil
}

// AckAfterClose deletes the inflight messages packetIDs without checking
// the epoch: for acknowledgements a connection read just before it closed,
// which a reconnect (a new epoch) may overtake. Outbound packet ids come
// from a per-session counter, so an id acknowledged this way names the same
// message, whichever connection sent it since.
func (s *Store) AckAfterClose(ctx context.Context, clientID string, packetIDs []uint16) error {
	if len(packetIDs) == 0 {
		return nil
	}
	ids := make([]string, len(packetIDs))
	for i, id := range packetIDs {
		ids[i] = strconv.Itoa(int(id))
	}
	if err := s.rdb.HDel(ctx, inflightKey(clientID), ids...).Err(); err != nil {
		return fmt.Errorf("acknowledging %d messages of %s: %w", len(packetIDs), clientID, err)
	}
	return nil
}
