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

// luaTake moves up to max messages from the queue KEYS[2] into the
// inflight hash KEYS[3], never filling it beyond the session's window, and
// returns {seq counter, full, pid1, seq1, entry1, pid2, seq2, entry2, ...}
// (full: 1 when the window stopped it with messages left in the queue);
// KEYS[1] is the session hash.
const luaTake = `
local function take(max, now)
  local h = redis.call('HMGET', KEYS[1], 'pid', 'seq', 'qbytes', 'win')
  local pid, seq, qb = tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
  local cap = tonumber(h[4] or '0')
  if cap <= 0 or cap > 65535 then cap = 65535 end
  local out = {0, 0}
  local taken = 0
  while taken < max do
    if redis.call('HLEN', KEYS[3]) >= cap then
      if redis.call('LLEN', KEYS[2]) > 0 then out[2] = 1 end
      break
    end
    local v = redis.call('LPOP', KEYS[2])
    if not v then break end
    qb = qb - mlen(v)
    local exp = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
    if exp == 0 or exp > now then
      repeat
        pid = pid % 65535 + 1
      until redis.call('HEXISTS', KEYS[3], pid) == 0
      seq = seq + 1
      redis.call('HSET', KEYS[3], pid, string.format('%.0f', seq) .. '|P|' .. v)
      out[#out + 1] = pid
      out[#out + 1] = string.format('%.0f', seq)
      out[#out + 1] = v
      taken = taken + 1
    end
  end
  if qb < 0 then qb = 0 end
  redis.call('HSET', KEYS[1], 'pid', pid, 'seq', string.format('%.0f', seq), 'qbytes', qb)
  follow(KEYS[3])
  out[1] = string.format('%.0f', seq)
  return out
end
`

// roundScript: KEYS session, queue, inflight; ARGV epoch, number of acks,
// the acks, number of pubrecs, the pubrecs, take max, now (unix ms).
var roundScript = redis.NewScript(luaPrelude + luaEntryLen + luaTake + `
local err = fence()
if err then return err end
local i = 2
local n = tonumber(ARGV[i])
for j = 1, n do redis.call('HDEL', KEYS[3], ARGV[i + j]) end
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
