package session

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors returned (wrapped) by the Store.
var (
	// ErrFenced means the caller's epoch is stale: the session was taken over
	// by a newer connection, so the caller must stop touching it.
	ErrFenced = errors.New("session epoch moved on")
	// ErrNoSession means the client has no session (never connected, expired
	// or ended).
	ErrNoSession = errors.New("no session")
	// ErrNotOwner means the session belongs to another identity: a CONNECT
	// for its client id neither takes it over nor wipes it.
	ErrNotOwner = errors.New("session owned by another identity")
)

// Gone reports whether err says the caller's connection no longer owns the
// session (ErrFenced or ErrNoSession): it must stop touching it, and a
// connection learning it this way was taken over.
func Gone(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, ErrNoSession)
}

// Store is the Redis session store. It is safe for concurrent use. It does
// not own its Redis client: the caller closes it.
type Store struct {
	rdb    redis.UniversalClient
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	maxMsg int64
	maxB   int64
	direct bool

	connects    Batcher[connectCall]
	disconnects Batcher[disconnectCall]
}

// Option customises a Store.
type Option func(*Store)

// WithDirectDelivery lets Enqueue hand a message of a connected session
// with an empty queue and room in its window straight to its inflight hash
// (OutcomeDirect). Only for a caller that then gives the message to the
// session's node (the dispatcher's notice): otherwise it waits in flight
// until that node looks.
func WithDirectDelivery() Option { return func(s *Store) { s.direct = true } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithClock sets the clock used for message expiry (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns a Store on rdb. It does no I/O; cfg should have passed
// Validate.
func New(rdb redis.UniversalClient, cfg Config, opts ...Option) *Store {
	s := &Store{
		rdb:    rdb,
		cfg:    cfg,
		log:    slog.Default(),
		now:    time.Now,
		maxMsg: int64(cfg.MaxQueuedMessages),
		maxB:   int64(cfg.MaxQueuedBytes),
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "session")
	s.connects.Run = s.runConnects
	s.disconnects.Run = s.runDisconnects
	return s
}

// tag is the hash tag for a client id or node name. Redis hashes the text
// between the first "{" and the first "}" after it, and the whole key when
// that is empty, so an id that contains "}" (or is empty) is hex-encoded
// behind "~"; ids starting with "~" are encoded too, which keeps the mapping
// one-to-one.
func tag(id string) string {
	if id == "" || id[0] == '~' || strings.IndexByte(id, '}') >= 0 {
		return "~" + hex.EncodeToString([]byte(id))
	}
	return id
}

// Key names. The hash tag {cid} keeps a session's keys in one slot.
func sessionKey(cid string) string  { return "fg:{" + tag(cid) + "}:s" }
func subsKey(cid string) string     { return "fg:{" + tag(cid) + "}:subs" }
func queueKey(cid string) string    { return "fg:{" + tag(cid) + "}:q" }
func inflightKey(cid string) string { return "fg:{" + tag(cid) + "}:inflight" }
func relKey(cid string) string      { return "fg:{" + tag(cid) + "}:rel" }
func nodeKey(node string) string    { return "fg:node:{" + tag(node) + "}" }
func sweptKey(node string) string   { return "fg:swept:{" + tag(node) + "}" }
func nodeSessionsKey(node string) string {
	return "fg:nodesessions:{" + tag(node) + "}"
}

// sessionKeys lists every key of a session, session hash first; the scripts
// that take them rely on this order.
func sessionKeys(cid string) []string {
	return []string{sessionKey(cid), subsKey(cid), queueKey(cid), inflightKey(cid), relKey(cid)}
}

// luaPrelude is prepended to every fenced script. fence returns an error
// reply unless the session hash KEYS[1] exists with epoch ARGV[1]. follow
// gives key the session hash's pending TTL, if any.
const luaPrelude = `
local function fence()
  local e = redis.call('HGET', KEYS[1], 'epoch')
  if not e then return redis.error_reply('FG_NOSESSION') end
  if e ~= ARGV[1] then return redis.error_reply('FG_FENCED') end
  return nil
end
local function follow(key, hold)
  local t = redis.call('PTTL', KEYS[1])
  if t > 0 then redis.call('PEXPIRE', key, t + (hold or 0)) end
end
`

// mapErr turns the scripts' error replies into the sentinel errors.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	// Redis prefixes "ERR " to script errors without an error code.
	msg := strings.TrimPrefix(err.Error(), "ERR ")
	switch {
	case strings.HasPrefix(msg, "FG_FENCED"):
		return ErrFenced
	case strings.HasPrefix(msg, "FG_NOSESSION"):
		return ErrNoSession
	case strings.HasPrefix(msg, "FG_NOTOWNER"):
		return ErrNotOwner
	}
	return err
}

func epochArg(epoch uint64) string { return strconv.FormatUint(epoch, 10) }

// UserProperty is an MQTT 5 user property (a key/value string pair that may
// repeat).
type UserProperty struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Will is a client's will message with its MQTT 5 properties [MQTT-3.1.3].
// It is stored as JSON with short field names in the session hash.
type Will struct {
	Topic   string `json:"t"`
	Payload []byte `json:"p,omitempty"`
	QoS     byte   `json:"q,omitempty"`
	Retain  bool   `json:"r,omitempty"`
	// DelaySeconds is the Will Delay Interval [MQTT-3.1.3-9].
	DelaySeconds uint32 `json:"d,omitempty"`
	// PayloadFormat is the Payload Format Indicator (0 bytes, 1 UTF-8).
	PayloadFormat byte `json:"pf,omitempty"`
	// MessageExpirySeconds is the Message Expiry Interval; HasMessageExpiry
	// says whether it was present.
	MessageExpirySeconds uint32         `json:"me,omitempty"`
	HasMessageExpiry     bool           `json:"hme,omitempty"`
	ContentType          string         `json:"ct,omitempty"`
	ResponseTopic        string         `json:"rt,omitempty"`
	CorrelationData      []byte         `json:"cd,omitempty"`
	UserProperties       []UserProperty `json:"up,omitempty"`
	// Username is the user name the client authenticated with, for the
	// record's username header when another process publishes the will.
	Username string `json:"u,omitempty"`
}

// ConnectRequest describes an accepted CONNECT.
type ConnectRequest struct {
	ClientID string
	// Node is the id of the node that holds the connection.
	Node string
	// CleanStart is Clean Start (MQTT 5) or Clean Session (3.1.1).
	CleanStart bool
	// ExpirySeconds is the Session Expiry Interval; for MQTT 3.1.1 use 0 with
	// Clean Session 1 and math.MaxUint32 with Clean Session 0.
	ExpirySeconds uint32
	// Protocol is the protocol version byte (4 = 3.1.1, 5 = 5.0).
	Protocol byte
	// Will is the will message, nil when the CONNECT has none.
	Will *Will
	// Window is how many outbound messages the connection takes in flight
	// (its Receive Maximum, capped by delivery.max-inflight). With it set, a
	// dispatcher hands a message of the connected session straight to the
	// inflight hash while the queue is empty and the window has room
	// (OutcomeDirect), and Take never fills the hash beyond it; 0: every
	// message goes through the queue.
	Window int
	// Owner is the authenticated identity of the connection; "" for an
	// anonymous one. A session remembers the identity that created it (or
	// first resumed it while it had none) and refuses every other
	// (ErrNotOwner), before it changes anything.
	Owner string
	// Tombstone, when set, is called with the subscriptions of the
	// previous session before a clean start discards them (not when there
	// are none), so that the dispatchers hear of their end first; an error
	// fails the Connect with nothing discarded. Nil discards them silently.
	Tombstone func(ctx context.Context, subs []Subscription) error
	// HandBack, when set with Tombstone, is called after it with the
	// messages the previous session's shared subscriptions held
	// undelivered (as Ended.Shared), before the clean start discards
	// them, so that another member gets them; likewise with what an
	// expired session left (SharedHold) when the client starts a new one.
	// An error fails the Connect with nothing discarded. Messages queued
	// for the previous session between that call and the discard are
	// handed back in another call (counted: one acknowledged meanwhile and
	// one queued meanwhile cancel out, and that one goes with the session).
	HandBack func(ctx context.Context, shared []SharedMessage) error
}

// ConnectResult is what Connect found and did.
type ConnectResult struct {
	// Epoch is the new connection epoch: the fencing token for every later
	// write of this connection.
	Epoch uint64
	// SessionPresent is the CONNACK Session Present flag.
	SessionPresent bool
	// PreviousNode is the node that owned the session before, "" if none.
	PreviousNode string
	// WasConnected says the session was connected (on PreviousNode): a
	// takeover, so that node must close its connection.
	WasConnected bool
	// TakenOverWill is the will of the connection taken over (WasConnected),
	// nil if it had none. Connect replaced it in the session, so the old
	// connection can no longer claim it: the caller publishes it when it is
	// due now (no will delay, or a clean start ends the old session) and
	// drops it otherwise, since the new connection came within the delay
	// [MQTT-3.1.3-9].
	TakenOverWill *Will
	// EndedWill is the will of a session that had expired when this
	// Connect came but was still held for its will (Disconnect with
	// HoldWill), nil otherwise. The session's end made it due
	// [MQTT-3.1.3-9] and Connect fenced the claim scheduled for it: the
	// caller publishes it. The session starts anew, as after a clean
	// start (req.Tombstone hears of its subscriptions).
	EndedWill *Will
	// Seq is the session's outbound sequence counter at the CONNECT: every
	// message in flight then has a sequence number at or below it (and is
	// resent), every message handed over later one above it.
	Seq uint64
	// Inflight is what the resumed session had in flight at the CONNECT,
	// in the order Take assigned it: what the connection resends
	// [MQTT-4.4.0-1]. Nil after a clean start.
	Inflight []InflightMessage
	// Queued says the resumed session's queue held messages at the
	// CONNECT.
	Queued bool
	// Subscribed says the resumed session held subscriptions at the
	// CONNECT. A session without any gets no message queued or handed
	// to it (the dispatchers' Enqueue finds it not subscribed) until a
	// SUBSCRIBE of its own.
	Subscribed bool
	// Claimed says Connect gave a session that outlives its connection
	// (ExpirySeconds > 0) an owner it did not have before: req.Owner is an
	// identity and the session was new, expired, or created anonymously.
	// Until a replica holds this write, a failover of its primary could
	// hand the client id to the next identity that asks for it
	// (session.Barrier). A resume by the session's own owner is not
	// Claimed, nor is a session that ends with its connection: its owner
	// holds only while it is connected, as after a disconnect.
	Claimed bool
}

// connectScript: KEYS the session's keys (sessionKeys); ARGV node, clean,
// expiry, protocol, will, window, owner, "1" when the subscriptions of a
// session a clean start discards must be returned first (so that their
// tombstones are written before they go), and, in a clean start's later
// runs, how many shared messages of the previous session were handed back
// ("" in a first run). It replies {1, field1, value1, ...} with those
// subscriptions, having changed nothing; {3, subscriptions, shared inflight
// entries, shared queue entries} when the previous session (or what an
// expired one left) holds shared subscriptions' messages to hand back
// first, having changed nothing (a later run: when it holds more than were
// handed back); or {0, epoch, present, previous node, was connected, the
// taken-over will, sequence counter, queue length, whether the session
// holds subscriptions (1 or 0), whether the session got an owner it did
// not have (1 or 0: ConnectResult.Claimed), then the inflight hash as
// field, value, ...}. "was connected" is 2 for a session found expired but held for its
// will (see disconnectScript): its will comes back in place of the
// taken-over one, and the session starts anew as after a clean start.
var connectScript = redis.NewScript(luaSharedEntries + `
local prev, was, old, oldwill = '', 0, 0, ''
local clean = ARGV[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Every session hash has an epoch (Connect writes it, every other write is
-- fenced by it): without one there is no session.
local v = redis.call('HMGET', KEYS[1], 'node', 'connected', 'epoch', 'will', 'owner', 'expiry', 'last_seen', 'seq')
local existed = v[3] ~= false
if existed then
  prev = v[1] or ''
  old = tonumber(v[3])
  if v[2] ~= '1' and v[6] and v[6] ~= '4294967295' and
      tonumber(v[7] or '0') + tonumber(v[6]) * 1000 <= math.floor(now / 1000) then
    -- The session expired; its keys are only held for its will, which
    -- its end makes due: it is returned for publishing, and the session
    -- starts anew whoever connects.
    clean, was, oldwill = true, 2, v[4] or ''
  else
    if v[5] and v[5] ~= '' and v[5] ~= ARGV[7] then
      return redis.error_reply('FG_NOTOWNER')
    end
    if v[2] == '1' then
      was = 1
      oldwill = v[4] or ''
    end
  end
end
local present = 0
if clean then
  if ARGV[8] == '1' then
    local subs = redis.call('HGETALL', KEYS[2])
    if #subs > 0 then
      local inflight, queued = sharedEntries(subs)
      if #inflight > 0 or #queued > 0 then
        return {3, subs, inflight, queued}
      end
      table.insert(subs, 1, 1)
      return subs
    end
  elseif ARGV[9] ~= '' then
    -- The clean start's next run: shared messages a dispatcher queued
    -- for the previous session since the last one go back too.
    local inflight, queued = sharedEntries(redis.call('HGETALL', KEYS[2]))
    if #inflight + #queued > tonumber(ARGV[9]) then return {3, {}, inflight, queued} end
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
elseif existed then
  present = 1
else
  -- No session: nothing left of an expired one (its other keys may
  -- outlive its hash by a moment, a shared member's queue and inflight
  -- hash by SharedHold) belongs to the new one. Shared messages left there
  -- go back first, as after a clean start.
  if ARGV[8] == '1' and redis.call('EXISTS', KEYS[3], KEYS[4]) > 0 then
    local inflight, queued = sharedEntries(nil)
    if #inflight > 0 or #queued > 0 then return {3, {}, inflight, queued} end
  end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
end
local epoch = now
if epoch <= old then epoch = old + 1 end
local ep = string.format('%d', epoch)
local fields = {'epoch', ep, 'node', ARGV[1], 'connected', '1',
  'clean', ARGV[2], 'expiry', ARGV[3], 'proto', ARGV[4],
  'last_seen', string.format('%d', math.floor(now / 1000)), 'win', ARGV[6], 'owner', ARGV[7]}
if ARGV[5] ~= '' then
  fields[#fields + 1] = 'will'
  fields[#fields + 1] = ARGV[5]
elseif present == 1 and v[4] then
  redis.call('HDEL', KEYS[1], 'will')
end
redis.call('HSET', KEYS[1], unpack(fields))
-- Only a session's end gives its keys a TTL (disconnectScript; the other
-- scripts follow the hash's): a resumed session that was disconnected
-- keeps them for good again. A clean start deleted them. Most devices'
-- sessions are the hash alone (no subscription, queue, inflight or QoS 2
-- state): one EXISTS spares the calls on the other four keys.
local others = 0
if present == 1 then others = redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5]) end
if present == 1 and v[2] ~= '1' then
  redis.call('PERSIST', KEYS[1])
  if others > 0 then
    for i = 2, 5 do redis.call('PERSIST', KEYS[i]) end
  end
end
local seq = '0'
if present == 1 and v[8] then seq = v[8] end
local claimed = 0
if ARGV[7] ~= '' and ARGV[3] ~= '0' and (not existed or v[5] ~= ARGV[7]) then claimed = 1 end
local out = {0, ep, present, prev, was, oldwill, seq, 0, 0, claimed}
if others > 0 then
  out[8] = redis.call('LLEN', KEYS[3])
  out[9] = redis.call('EXISTS', KEYS[2])
  local inflight = redis.call('HGETALL', KEYS[4])
  for i = 1, #inflight do out[#out + 1] = inflight[i] end
end
return out
`)

// connectCall is one Connect in a batch.
type connectCall struct {
	req  *ConnectRequest
	will string
	// tombstone asks for the subscriptions a clean start discards.
	tombstone bool
	// handed, from the second run of a clean start on, is how many shared
	// messages of the previous session were handed back: the script
	// returns them again, with those queued since, while there are more
	// (-1: the first run).
	handed int

	res    ConnectResult
	subs   []Subscription  // the subscriptions to tombstone first
	shared []SharedMessage // the shared messages to hand back first
	err    error
}

// Connect registers a connection for req.ClientID on req.Node and returns
// its epoch. With CleanStart the previous session's subscriptions, queue,
// inflight messages and inbound QoS 2 state are discarded [MQTT-3.1.2-4]
// (req.Tombstone hears of the subscriptions first); otherwise they are
// resumed [MQTT-3.1.2-5], and the result carries what the connection
// resends and whether the queue holds messages. Session Present is 0 after
// a clean start [MQTT-3.2.2-2] and says whether a session was found
// otherwise [MQTT-3.2.2-3]. Any pending expiry of the session's keys is
// removed.
//
// A session owned by another identity than req.Owner is left as it is and
// ErrNotOwner returned (see ConnectRequest.Owner), before req.Tombstone is
// called.
//
// The node index (SessionsOwnedBy) is updated outside the script, since it
// lives in another slot: the client is added to req.Node's index before the
// script runs and removed from the previous node's index after it, so a
// crash in between leaves a stale index entry (filtered out when listing),
// never a missing one.
//
// Concurrent Connects share pipelines (see Batcher): a reconnect storm
// costs Redis one round trip per batch, not one per CONNECT.
func (s *Store) Connect(ctx context.Context, req ConnectRequest) (ConnectResult, error) {
	call := &connectCall{req: &req, tombstone: req.Tombstone != nil, handed: -1}
	if req.Will != nil {
		b, err := json.Marshal(req.Will)
		if err != nil {
			return ConnectResult{}, fmt.Errorf("encoding will of %s: %w", req.ClientID, err)
		}
		call.will = string(b)
	}
	if err := s.connects.Do(ctx, call); err != nil {
		return ConnectResult{}, fmt.Errorf("connecting session %s: %w", req.ClientID, err)
	}
	// A clean start over subscriptions: their tombstones first (and the
	// shared messages handed back), then the connect again, which now
	// discards them, unless a dispatcher queued more shared messages for
	// the previous session meanwhile: those are handed back, and so on.
	var handed []SharedMessage
	for round := 0; call.err == nil && call.subs != nil; round++ {
		if round == maxCleanStartRounds {
			return ConnectResult{}, fmt.Errorf("connecting session %s: the previous session's shared messages kept coming through %d hand-backs", req.ClientID, round)
		}
		if len(call.subs) > 0 {
			if err := req.Tombstone(ctx, call.subs); err != nil {
				return ConnectResult{}, fmt.Errorf("connecting session %s: dropping the previous subscriptions: %w", req.ClientID, err)
			}
		}
		if more := withoutShared(call.shared, handed); len(more) > 0 && req.HandBack != nil {
			if err := req.HandBack(ctx, more); err != nil {
				return ConnectResult{}, fmt.Errorf("connecting session %s: handing back the previous session's shared messages: %w", req.ClientID, err)
			}
		}
		handed = call.shared
		call = &connectCall{req: &req, will: call.will, handed: len(handed)}
		if err := s.connects.Do(ctx, call); err != nil {
			return ConnectResult{}, fmt.Errorf("connecting session %s: %w", req.ClientID, err)
		}
	}
	return call.res, call.err
}

// maxCleanStartRounds bounds the runs of a clean start's script that find
// more shared messages to hand back (Connect).
const maxCleanStartRounds = 8

// withoutShared returns the messages of all that are not in gone, each of
// gone taking away one equal message.
func withoutShared(all, gone []SharedMessage) []SharedMessage {
	if len(gone) == 0 {
		return all
	}
	type key struct {
		msg    string
		expiry int64
	}
	left := make(map[key]int, len(gone))
	for _, m := range gone {
		left[key{string(m.Message), m.Expiry.UnixMilli()}]++
	}
	var out []SharedMessage
	for _, m := range all {
		k := key{string(m.Message), m.Expiry.UnixMilli()}
		if left[k] > 0 {
			left[k]--
			continue
		}
		out = append(out, m)
	}
	return out
}

// runConnects is the batch of Connects: the node indexes first (one SADD
// per node), then a script per CONNECT, then the previous nodes' indexes.
func (s *Store) runConnects(ctx context.Context, calls []*connectCall) {
	members := map[string][]any{}
	for _, c := range calls {
		members[c.req.Node] = append(members[c.req.Node], c.req.ClientID)
	}
	index := func(p redis.Pipeliner) map[string]*redis.IntCmd {
		cmds := make(map[string]*redis.IntCmd, len(members))
		for node, ids := range members {
			cmds[node] = p.SAdd(ctx, nodeSessionsKey(node), ids...)
		}
		return cmds
	}
	var indexed map[string]*redis.IntCmd
	pre := func(p redis.Pipeliner) { indexed = index(p) }
	if isCluster(s.rdb) {
		// Shards run a pipeline in parallel: the index must be written
		// before the scripts run, so it goes first on its own.
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { pre(p); return nil })
		pre = nil
	}
	live := calls[:0:0]
	if pre == nil {
		for _, c := range calls {
			if err := indexed[c.req.Node].Err(); err != nil {
				c.err = fmt.Errorf("connecting session %s: indexing it on node %s: %w", c.req.ClientID, c.req.Node, err)
				continue
			}
			live = append(live, c)
		}
	} else {
		live = calls
	}
	cmds := evalAll(ctx, s.rdb, connectScript, len(live), func(i int) ([]string, []any) {
		r := live[i].req
		clean, tomb, handed := "0", "0", ""
		if r.CleanStart {
			clean = "1"
		}
		if live[i].tombstone {
			tomb = "1"
		}
		if live[i].handed >= 0 {
			handed = strconv.Itoa(live[i].handed)
		}
		return sessionKeys(r.ClientID), []any{r.Node, clean, strconv.FormatUint(uint64(r.ExpirySeconds), 10),
			strconv.Itoa(int(r.Protocol)), live[i].will, r.Window, r.Owner, tomb, handed}
	}, pre)
	forget := map[string][]any{}
	for i, c := range live {
		if pre != nil {
			if err := indexed[c.req.Node].Err(); err != nil {
				// The script ran regardless, but without the index entry
				// the session must not be used: a crash of this node
				// would leave its will unpublished.
				c.err = fmt.Errorf("connecting session %s: indexing it on node %s: %w", c.req.ClientID, c.req.Node, err)
				continue
			}
		}
		v, err := cmds[i].Slice()
		if err != nil {
			c.err = fmt.Errorf("connecting session %s: %w", c.req.ClientID, mapErr(err))
			continue
		}
		if kind, _ := v[0].(int64); kind == 3 && len(v) == 4 {
			// A clean start over shared subscriptions with messages.
			e := s.parseEnded(ctx, c.req.ClientID, v[1], v[2], v[3])
			c.subs, c.shared = e.Subscriptions, e.Shared
			if c.subs == nil {
				c.subs = []Subscription{}
			}
			continue
		}
		c.res, c.subs, c.err = parseConnect(c.req.ClientID, v)
		if c.err == nil && c.subs == nil && c.res.PreviousNode != "" && c.res.PreviousNode != c.req.Node {
			forget[c.res.PreviousNode] = append(forget[c.res.PreviousNode], c.req.ClientID)
		}
	}
	s.forgetAll(ctx, forget)
}

// parseConnect decodes the reply of connectScript.
func parseConnect(clientID string, v []any) (ConnectResult, []Subscription, error) {
	if len(v) == 0 {
		return ConnectResult{}, nil, fmt.Errorf("connecting session %s: empty reply", clientID)
	}
	if kind, _ := v[0].(int64); kind == 1 {
		subs := make([]Subscription, 0, (len(v)-1)/2)
		for i := 1; i+1 < len(v); i += 2 {
			f, _ := v[i].(string)
			val, _ := v[i+1].(string)
			sub, err := decodeSubscription(parseField(f), val)
			if err != nil {
				return ConnectResult{}, nil, fmt.Errorf("connecting session %s: previous subscriptions: %w", clientID, err)
			}
			subs = append(subs, sub)
		}
		return ConnectResult{}, subs, nil
	}
	if len(v) < 10 {
		return ConnectResult{}, nil, fmt.Errorf("connecting session %s: short reply", clientID)
	}
	ep, _ := v[1].(string)
	epoch, err := strconv.ParseUint(ep, 10, 64)
	if err != nil {
		return ConnectResult{}, nil, fmt.Errorf("connecting session %s: bad epoch %q", clientID, ep)
	}
	present, _ := v[2].(int64)
	prev, _ := v[3].(string)
	was, _ := v[4].(int64)
	sq, _ := v[6].(string)
	qlen, _ := v[7].(int64)
	subscribed, _ := v[8].(int64)
	claimed, _ := v[9].(int64)
	res := ConnectResult{Epoch: epoch, SessionPresent: present == 1, PreviousNode: prev, WasConnected: was == 1,
		Queued: qlen > 0, Subscribed: subscribed == 1, Claimed: claimed == 1}
	res.Seq, _ = strconv.ParseUint(sq, 10, 64)
	if w, _ := v[5].(string); w != "" {
		will := new(Will)
		if err := json.Unmarshal([]byte(w), will); err != nil {
			return res, nil, fmt.Errorf("connecting session %s: malformed will of the previous connection: %w", clientID, err)
		}
		if was == 2 {
			res.EndedWill = will
		} else {
			res.TakenOverWill = will
		}
	}
	if n := (len(v) - 10) / 2; n > 0 {
		res.Inflight = make([]InflightMessage, 0, n)
		for i := 10; i+1 < len(v); i += 2 {
			f, _ := v[i].(string)
			val, _ := v[i+1].(string)
			im, err := decodeInflight(f, val)
			if err != nil {
				return res, nil, fmt.Errorf("connecting session %s: inflight: %w", clientID, err)
			}
			res.Inflight = append(res.Inflight, im)
		}
		sortInflight(res.Inflight)
	}
	return res, nil, nil
}

// disconnectScript: KEYS the session's keys; ARGV epoch, expiry, "1" to
// return what a session that expiry 0 ends held, and the seconds to hold
// the keys past the expiry when the session has a will ("0": none). It
// replies {ended (1) or kept (0), has a will (2: and the keys are held for
// it), node}, and with ended and "1" three more: the subscriptions as
// {field, value, ...}; and, when one of them is shared, the shared
// subscriptions' messages it held undelivered (MessageVersionShared of
// pkg/handoff, whose first byte is 2): the inflight entries not yet
// PUBREC'd, then the queue entries, each as stored. When there are such
// messages, the queue and inflight hash outlive the session by SharedHold
// (luaKeepShared) and a seventh element, 1, says so.
var disconnectScript = redis.NewScript(luaSharedEntries + luaKeepShared + `
local v = redis.call('HMGET', KEYS[1], 'epoch', 'node', 'will', 'shared')
if not v[1] then return redis.error_reply('FG_NOSESSION') end
if v[1] ~= ARGV[1] then return redis.error_reply('FG_FENCED') end
local node = v[2] or ''
if ARGV[2] == '0' then
  local out = {1, 0, node}
  if ARGV[3] == '1' then
    local subs = redis.call('HGETALL', KEYS[2])
    local inflight, queued = sharedEntries(subs)
    out[4], out[5], out[6] = subs, inflight, queued
    if keepShared(inflight, queued) then
      out[7] = 1
      return out
    end
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  return out
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'connected', '0', 'expiry', ARGV[2],
  'last_seen', string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
local w = 0
if v[3] then w = 1 end
if ARGV[2] ~= '4294967295' then
  local ttl = tonumber(ARGV[2])
  if w == 1 and ARGV[4] ~= '0' then
    w, ttl = 2, ttl + tonumber(ARGV[4])
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  -- As in connectScript: the other keys only when one of them exists.
  if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5]) > 0 then
    for i = 2, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
  end
  if v[4] == '1' then
    -- Queue and inflight outlive the session for the expiry sweep, which
    -- hands their shared messages on (ExpiredShared).
    redis.call('EXPIRE', KEYS[3], ttl + ` + sharedHoldSeconds + `)
    redis.call('EXPIRE', KEYS[4], ttl + ` + sharedHoldSeconds + `)
  end
end
return {0, w, node}
`)

// luaSharedEntries defines sharedEntries(subs): given the session's
// subscriptions hash as HGETALL returns it, the entries of the session
// (KEYS[3] queue, KEYS[4] inflight) that came through a shared
// subscription (handoff.MessageVersionShared, first byte 2) and are not
// delivered: inflight entries in state P (not acknowledged; not PUBREC'd),
// then queue entries, each as stored. Nothing is read when no subscription
// is shared (a field's group is empty: it starts with "\0"); with subs nil
// the entries are read regardless.
const luaSharedEntries = `
local function sharedEntries(subs)
  local inflight, queued, shared = {}, {}, subs == nil
  if subs then
    for i = 1, #subs, 2 do
      if string.byte(subs[i], 1) ~= 0 then shared = true end
    end
  end
  if not shared then return inflight, queued end
  local fl = redis.call('HVALS', KEYS[4])
  for i = 1, #fl do
    local e = fl[i]
    local a = string.find(e, '|', 1, true)
    if a and string.sub(e, a + 1, a + 1) == 'P' then
      local b = string.find(e, '|', a + 3, true)
      if b and string.byte(e, b + 1) == 2 then inflight[#inflight + 1] = e end
    end
  end
  local q = redis.call('LRANGE', KEYS[3], 0, -1)
  for i = 1, #q do
    local b = string.find(q[i], '|', 1, true)
    if b and string.byte(q[i], b + 1) == 2 then queued[#queued + 1] = q[i] end
  end
  return inflight, queued
end
`

// luaKeepShared defines keepShared(inflight, queued): when a session that
// ends holds shared subscriptions' messages undelivered (sharedEntries),
// it deletes the session but for its queue and inflight hash, which it
// keeps SharedHold longer, and returns true; else it does nothing and
// returns false. The messages then stay in Redis until the process that
// ended the session has handed them back (DiscardExpired), or else until
// the dispatchers' expiry sweep does (the session goes into the expiry
// index), or a new session of the client does at its CONNECT.
var luaKeepShared = `
local function keepShared(inflight, queued)
  if #inflight == 0 and #queued == 0 then return false end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
  redis.call('PEXPIRE', KEYS[3], ` + sharedHoldMillis + `)
  redis.call('PEXPIRE', KEYS[4], ` + sharedHoldMillis + `)
  return true
end
`

// disconnectCall is one Disconnect in a batch.
type disconnectCall struct {
	clientID string
	epoch    uint64
	expiry   uint32
	subs     bool // return the subscriptions of an ended session
	// sweepSubs leaves the subscriptions of an ended session to the
	// dispatchers' expiry sweep (the expiry index, at once).
	sweepSubs bool
	// node, when set, is the node that holds the connection, and the
	// session holds no will: its node index entry goes in the scripts'
	// pipeline (EndWithoutWill).
	node string
	hold uint32 // seconds to hold the keys of a session with a will past its expiry

	ended Ended
	err   error
}

// Ended is what a session that ended held: its subscriptions, for their
// tombstones, and the messages of its shared subscriptions it had not
// delivered, for another member of each (MQTT 5 section 4.8.2).
type Ended struct {
	Subscriptions []Subscription
	// Shared are the messages routed to the session through a shared
	// subscription (a handoff.Message with a Shared origin) and not
	// delivered: those in flight that the client had not acknowledged
	// (QoS 1) or not received (QoS 2, no PUBREC yet), oldest first, then
	// the queued ones in queue order.
	Shared []SharedMessage
	// Kept says that Shared are still in Redis as well: the ended
	// session's queue and inflight hash outlive it by SharedHold, and the
	// session is in the expiry index. Whoever ended it hands them back and
	// then deletes them (DiscardExpired); if it cannot (Kafka does not
	// take them, or it dies first), the dispatchers' expiry sweep hands
	// them back (ExpiredShared), or a new session of the client does at its
	// CONNECT. Ends that keep a session (an expiry to wait for) return no
	// Shared.
	Kept bool
}

// SharedMessage is one message of Ended.Shared.
type SharedMessage struct {
	// Message is the encoded handoff.Message, as the session held it.
	Message []byte
	// Expiry is when it expires; zero for never.
	Expiry time.Time
}

// Disconnect records that the connection with epoch ended. expirySeconds is
// the Session Expiry Interval in force at the disconnect (MQTT 5 may change
// it in DISCONNECT [MQTT-3.14.2-2]): 0 deletes the session now
// [MQTT-3.1.2-4]; 0xFFFFFFFF keeps it without expiry (MQTT 5 section
// 3.1.2.11.2, and Clean Session 0 of MQTT 3.1.1); otherwise every key of the
// session expires after that many seconds unless a new Connect comes first
// [MQTT-4.1.0-1].
//
// Disconnect leaves the will in place: on a normal disconnect the node
// discards it with ClaimWill [MQTT-3.1.2-10]; after an abnormal one it
// claims it when the will delay ends, so exactly one process publishes it.
// A Connect before then replaces the will and fences the pending claim.
// With expirySeconds 0 the will is deleted with the session: claim it first
// when it is to be published [MQTT-3.1.3-9].
//
// Concurrent Disconnects share pipelines, as Connects do.
func (s *Store) Disconnect(ctx context.Context, clientID string, epoch uint64, expirySeconds uint32) error {
	_, err := s.disconnect(ctx, &disconnectCall{clientID: clientID, epoch: epoch, expiry: expirySeconds})
	return err
}

// End is Disconnect that also returns what the session held when
// expirySeconds 0 ended it (nothing otherwise), read in the same atomic
// step that deleted it: the caller writes the tombstones of its
// subscriptions and hands its shared subscriptions' messages back to the
// dispatchers.
func (s *Store) End(ctx context.Context, clientID string, epoch uint64, expirySeconds uint32) (Ended, error) {
	return s.disconnect(ctx, &disconnectCall{clientID: clientID, epoch: epoch, expiry: expirySeconds, subs: true})
}

// WillHold is how long Disconnect with HoldWill keeps the keys of an
// expired session with a will: long enough for the node's claim at the
// expiry (EndWithWill), or, if that node dies, for the wills sweeper to
// find the node dead (node.liveness-ttl) and claim it.
const WillHold = 2 * time.Minute

// EndHoldingWill is End for a session whose will is due when the session
// expires, before its Will Delay Interval [MQTT-3.1.3-9]: were the keys to
// expire with the session, the will would go with them. They are held
// WillHold longer; Connect treats the session as expired meanwhile (and
// hands its will to the caller, ConnectResult.EndedWill), and the node
// ends it at the expiry with EndWithWill.
func (s *Store) EndHoldingWill(ctx context.Context, clientID string, epoch uint64, expirySeconds uint32) (Ended, error) {
	return s.disconnect(ctx, &disconnectCall{clientID: clientID, epoch: epoch, expiry: expirySeconds, subs: true, hold: uint32(WillHold / time.Second)})
}

// EndKeepingWill is End for a session whose will is due at its Will Delay
// Interval, willDelaySeconds, before the session expires. The node that
// holds the connection publishes it then (wills.Scheduler); if that node
// dies first, the wills sweeper publishes it once the node's liveness has
// lapsed, which may be after a short expiry: the keys are kept at least
// WillHold past the will's delay (longer only when the expiry is shorter
// than that), so the will is still there. Connect treats the session as
// expired after its expiry all the same.
func (s *Store) EndKeepingWill(ctx context.Context, clientID string, epoch uint64, expirySeconds, willDelaySeconds uint32) (Ended, error) {
	var hold uint32
	if keep := uint64(willDelaySeconds) + uint64(WillHold/time.Second); expirySeconds != 0 && expirySeconds != math.MaxUint32 && keep > uint64(expirySeconds) {
		hold = uint32(min(keep-uint64(expirySeconds), math.MaxUint32-1-uint64(expirySeconds)))
	}
	return s.disconnect(ctx, &disconnectCall{clientID: clientID, epoch: epoch, expiry: expirySeconds, subs: true, hold: hold})
}

// EndWithoutWill is End for the connection epoch of node when the session
// holds no will (none was given, or it was claimed): the session leaves
// node's index (SessionsOwnedBy) in the same round trip as its script,
// instead of one after it. A session that still holds a will must stay in
// the index until the will is claimed, for a sweeper should the node die:
// call End for it.
func (s *Store) EndWithoutWill(ctx context.Context, node, clientID string, epoch uint64, expirySeconds uint32) (Ended, error) {
	return s.disconnect(ctx, &disconnectCall{clientID: clientID, epoch: epoch, expiry: expirySeconds, subs: true, node: node})
}

// EndForDeadNode is End for a session of a dead node, which a wills sweeper
// ends for that node: it returns the shared subscriptions' messages the
// session held when expirySeconds 0 ended it, and leaves the tombstones of
// its subscriptions to the dispatchers' expiry sweep, which finds the
// session in the expiry index at once (ExpiredSessions).
func (s *Store) EndForDeadNode(ctx context.Context, clientID string, epoch uint64, expirySeconds uint32) (Ended, error) {
	return s.disconnect(ctx, &disconnectCall{clientID: clientID, epoch: epoch, expiry: expirySeconds, subs: true, sweepSubs: true})
}

func (s *Store) disconnect(ctx context.Context, c *disconnectCall) (Ended, error) {
	if err := s.disconnects.Do(ctx, c); err != nil {
		return Ended{}, fmt.Errorf("disconnecting session %s: %w", c.clientID, err)
	}
	return c.ended, c.err
}

// runDisconnects is the batch of Disconnects: the expiry index and a
// script each in one pipeline, then the node indexes.
func (s *Store) runDisconnects(ctx context.Context, calls []*disconnectCall) {
	// The expiry index first, in the scripts' pipeline: its entries do
	// not depend on what the scripts find, so a crash between the two
	// cannot leave an expired session's subscriptions without their
	// tombstones, and it costs no round trip of its own. An entry for a
	// session the script refuses (fenced, gone) is harmless: the sweep
	// finds the session resumed or gone, and forgets it.
	now := s.now()
	var expiring []redis.Z
	for _, c := range calls {
		switch {
		case c.expiry == 0 && c.sweepSubs:
			// Ended for a dead node: the sweep writes the tombstones.
			expiring = append(expiring, redis.Z{Score: float64(now.UnixMilli()), Member: c.clientID})
		case c.expiry != 0 && c.expiry != math.MaxUint32:
			// Redis expires the session's keys; the expiry index tells
			// the dispatchers when to drop its subscriptions
			// (ExpiredSessions). A session whose keys are held for its
			// will (hold, when it has one) expires that much later.
			at := now.Add(time.Duration(c.expiry)*time.Second + time.Duration(c.hold)*time.Second)
			expiring = append(expiring, redis.Z{Score: float64(at.UnixMilli()), Member: c.clientID})
		}
	}
	// The node index entries of sessions without a will likewise: the
	// session leaves the index whatever the script finds (it is ended,
	// disconnected without a will, or owned by another connection now).
	unindex := map[string][]any{}
	for _, c := range calls {
		if c.node != "" {
			unindex[c.node] = append(unindex[c.node], c.clientID)
		}
	}
	var zadd *redis.IntCmd
	srem := map[string]*redis.IntCmd{}
	var pre func(redis.Pipeliner)
	if len(expiring) > 0 || len(unindex) > 0 {
		pre = func(p redis.Pipeliner) {
			if len(expiring) > 0 {
				zadd = p.ZAdd(ctx, expiringKey, expiring...)
			}
			for node, ids := range unindex {
				srem[node] = p.SRem(ctx, nodeSessionsKey(node), ids...)
			}
		}
	}
	cmds := evalAll(ctx, s.rdb, disconnectScript, len(calls), func(i int) ([]string, []any) {
		c := calls[i]
		subs, hold := "0", "0"
		if c.subs {
			subs = "1"
		}
		if c.hold > 0 {
			hold = strconv.FormatUint(uint64(c.hold), 10)
		}
		return sessionKeys(c.clientID), []any{epochArg(c.epoch), strconv.FormatUint(uint64(c.expiry), 10), subs, hold}
	}, pre)
	if zadd != nil {
		if err := zadd.Err(); err != nil {
			s.log.WarnContext(ctx, "recording session expiry", "sessions", len(expiring), "err", err)
		}
	}
	for node, cmd := range srem {
		if err := cmd.Err(); err != nil {
			s.log.WarnContext(ctx, "removing sessions from node index", "node", node, "sessions", len(unindex[node]), "err", err)
		}
	}
	forget := map[string][]any{}
	var kept []redis.Z
	for i, c := range calls {
		v, err := cmds[i].Slice()
		if err == nil && len(v) < 3 {
			err = errors.New("short reply")
		}
		if err != nil {
			c.err = fmt.Errorf("disconnecting session %s: %w", c.clientID, mapErr(err))
			continue
		}
		ended, _ := v[0].(int64)
		will, _ := v[1].(int64)
		node, _ := v[2].(string)
		// The node's index keeps a disconnected session only while its
		// will is pending, so a sweeper can still publish it if the node
		// dies.
		if node != "" && node != c.node && (ended == 1 || will == 0) {
			forget[node] = append(forget[node], c.clientID)
		}
		if len(v) >= 6 {
			c.ended = s.parseEnded(ctx, c.clientID, v[3], v[4], v[5])
			c.ended.Kept = len(v) == 7
			if c.ended.Kept && !(c.expiry == 0 && c.sweepSubs) {
				// Not listed before the script: the sweep must find
				// what it kept.
				kept = append(kept, redis.Z{Score: float64(now.UnixMilli()), Member: c.clientID})
			}
		}
	}
	if len(kept) > 0 {
		if err := s.rdb.ZAdd(ctx, expiringKey, kept...).Err(); err != nil {
			s.log.WarnContext(ctx, "listing ended sessions' kept shared messages for the expiry sweep", "sessions", len(kept), "err", err)
		}
	}
	s.forgetAll(ctx, forget)
}

// parseEnded reads the last three elements of an ended session's
// disconnectScript reply: subscriptions, shared inflight entries, shared
// queue entries. What does not decode is logged and skipped.
func (s *Store) parseEnded(ctx context.Context, clientID string, subs, inflight, queued any) Ended {
	var e Ended
	strs := func(v any) []string {
		l, _ := v.([]any)
		out := make([]string, 0, len(l))
		for _, x := range l {
			str, _ := x.(string)
			out = append(out, str)
		}
		return out
	}
	sv := strs(subs)
	for j := 0; j+1 < len(sv); j += 2 {
		sub, err := decodeSubscription(parseField(sv[j]), sv[j+1])
		if err != nil {
			s.log.WarnContext(ctx, "skipping a malformed subscription of an ended session", "client_id", clientID, "err", err)
			continue
		}
		e.Subscriptions = append(e.Subscriptions, sub)
	}
	var flight []InflightMessage
	for _, v := range strs(inflight) {
		im, err := decodeInflight("0", v)
		if err != nil {
			s.log.WarnContext(ctx, "skipping a malformed inflight entry of an ended session", "client_id", clientID, "err", err)
			continue
		}
		flight = append(flight, im)
	}
	slices.SortFunc(flight, func(a, b InflightMessage) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, im := range flight {
		e.Shared = append(e.Shared, SharedMessage{Message: im.Message, Expiry: im.Expiry})
	}
	for _, v := range strs(queued) {
		m, exp, err := decodeEntry(v)
		if err != nil {
			s.log.WarnContext(ctx, "skipping a malformed queue entry of an ended session", "client_id", clientID, "err", err)
			continue
		}
		e.Shared = append(e.Shared, SharedMessage{Message: m, Expiry: exp})
	}
	return e
}

// forgetAll removes client ids from node indexes (node → ids), best effort:
// SessionsOwnedBy skips entries whose session no longer names the node, so
// a leftover entry costs only memory until the next listing.
func (s *Store) forgetAll(ctx context.Context, ids map[string][]any) {
	if len(ids) == 0 {
		return
	}
	cmds := make(map[string]*redis.IntCmd, len(ids))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for node, members := range ids {
			cmds[node] = p.SRem(ctx, nodeSessionsKey(node), members...)
		}
		return nil
	})
	for node, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			s.log.WarnContext(ctx, "removing sessions from node index", "node", node, "sessions", len(ids[node]), "err", err)
		}
	}
}

// Info is a snapshot of a session hash.
type Info struct {
	Node          string
	Epoch         uint64
	Protocol      byte
	CleanStart    bool
	ExpirySeconds uint32
	Connected     bool
	LastSeen      time.Time
	HasWill       bool
	// QueuedBytes is the sum of the sizes of the queued messages.
	QueuedBytes int64
	// Owner is the identity the session belongs to; "" for none.
	Owner string
}

// Session returns a snapshot of clientID's session, or ErrNoSession.
func (s *Store) Session(ctx context.Context, clientID string) (Info, error) {
	m, err := s.rdb.HGetAll(ctx, sessionKey(clientID)).Result()
	if err != nil {
		return Info{}, fmt.Errorf("reading session %s: %w", clientID, err)
	}
	if len(m) == 0 {
		return Info{}, ErrNoSession
	}
	u := func(k string) uint64 { n, _ := strconv.ParseUint(m[k], 10, 64); return n }
	_, hasWill := m["will"]
	return Info{
		Node:          m["node"],
		Epoch:         u("epoch"),
		Protocol:      byte(u("proto")),
		CleanStart:    m["clean"] == "1",
		ExpirySeconds: uint32(u("expiry")),
		Connected:     m["connected"] == "1",
		LastSeen:      time.UnixMilli(int64(u("last_seen"))),
		HasWill:       hasWill,
		QueuedBytes:   int64(u("qbytes")),
		Owner:         m["owner"],
	}, nil
}
