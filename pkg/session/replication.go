package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replication asks the Redis primaries whether their replicas have every
// write the primaries acknowledged before a round began. Redis replicates
// asynchronously: a replica promoted after its primary died lacks the
// primary's last writes, and for a dispatcher those are the messages it
// queued for sessions and whose Kafka offsets it is about to commit
// (docs/operations.md, "Redis failover").
//
// A round writes a marker key on one connection pinned to each primary
// (for Redis Cluster, a key in a slot that primary owns) and sends WAIT on
// that connection: the replication stream is ordered, so the replicas that
// acknowledged the marker hold every write the primary acknowledged before
// it, from any connection. It also reads the primary's replication ID
// (INFO replication, master_replid), which changes when a replica is
// promoted and when a primary restarts: a caller that sees another set of
// primaries, or another ID, knows that writes it made since its last
// confirmed round may be gone.
//
// A Replication is not safe for concurrent rounds; the caller serializes
// them.
type Replication struct {
	rdb     redis.UniversalClient
	owner   string // in the marker keys, so dispatchers do not share them
	want    int    // replicas to wait for, at most
	timeout time.Duration

	mu    sync.Mutex
	conns map[string]*pinned // by the primary's address
	// most is, by primary address, the most replicas the primary had
	// connected since its replication ID was first seen.
	most map[string]expectation
}

type expectation struct {
	replID string
	most   int
}

type pinned struct {
	conn *redis.Conn
	key  string
	seq  uint64
}

// Primary is what one round learnt of one primary.
type Primary struct {
	Addr string
	// ReplID is the primary's replication ID (INFO replication,
	// master_replid): another one means another primary, or the same one
	// restarted.
	ReplID string
	// Connected is how many replicas the primary has connected.
	Connected int
	// Needed is how many acknowledgements the round waited for: the
	// wanted count, at most the most replicas the primary had connected
	// under its replication ID since this Replication first asked it. A
	// replica that disconnected still counts (it may be promoted with
	// what it had): rounds are short until it is back.
	Needed int
	// Acked is how many replicas acknowledged the round's marker (WAIT's
	// answer); -1 when the round did not wait (Needed 0, or fewer
	// replicas connected than Needed).
	Acked int
	// NoReplicationInfo: the server refused INFO replication, so the
	// round neither waited for replicas nor read a replication ID.
	NoReplicationInfo bool
	// Err is why the round failed on this primary (unreachable, not a
	// primary any more, the marker's slot moved); nil on success.
	Err error
}

// Confirmed reports whether Needed replicas of the primary hold every
// write it acknowledged before the round.
func (p Primary) Confirmed() bool { return p.Err == nil && (p.Needed == 0 || p.Acked >= p.Needed) }

// NewReplication returns a Replication of rdb's primaries that waits, in
// each round, for up to want replicas of each (fewer when fewer are
// connected), at most timeout. owner names the caller in the marker keys
// (a dispatcher's node id).
func NewReplication(rdb redis.UniversalClient, owner string, want int, timeout time.Duration) *Replication {
	return &Replication{rdb: rdb, owner: owner, want: want, timeout: timeout, conns: map[string]*pinned{}, most: map[string]expectation{}}
}

// Round runs one round on every primary, concurrently, and returns what
// each said, sorted by address. An error means the primaries could not be
// listed (for Redis Cluster: no node answered its topology); a primary's
// own failure is in its Primary.Err.
func (r *Replication) Round(ctx context.Context) ([]Primary, error) {
	var (
		mu  sync.Mutex
		out []Primary
	)
	one := func(ctx context.Context, c *redis.Client) error {
		p := r.roundOn(ctx, c)
		mu.Lock()
		out = append(out, p)
		mu.Unlock()
		return nil
	}
	var err error
	switch c := r.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, one)
	case *redis.Client:
		err = one(ctx, c)
	default:
		err = fmt.Errorf("redis: cannot list the primaries of a %T", r.rdb)
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Primary) int { return strings.Compare(a.Addr, b.Addr) })
	return out, nil
}

// RoundFor runs one round on the primaries that hold keys, concurrently,
// and returns what each said, sorted by address; with no keys, or on a
// single Redis, it is Round.
func (r *Replication) RoundFor(ctx context.Context, keys []string) ([]Primary, error) {
	cc, ok := r.rdb.(*redis.ClusterClient)
	if !ok || len(keys) == 0 {
		return r.Round(ctx)
	}
	masters := map[string]*redis.Client{}
	for _, k := range keys {
		m, err := cc.MasterForKey(ctx, k)
		if err != nil {
			return nil, err
		}
		masters[m.Options().Addr] = m
	}
	out := make([]Primary, 0, len(masters))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := r.roundOn(ctx, m)
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b Primary) int { return strings.Compare(a.Addr, b.Addr) })
	return out, nil
}

// roundOn is one primary's round: INFO replication and the marker in one
// pipeline, then WAIT when the primary has replicas to wait for.
func (r *Replication) roundOn(ctx context.Context, c *redis.Client) Primary {
	addr := c.Options().Addr
	p := Primary{Addr: addr, Acked: -1}
	pc, err := r.pinnedFor(ctx, c)
	if err != nil {
		p.Err = err
		return p
	}
	pc.seq++
	var info *redis.StringCmd
	var set *redis.StatusCmd
	// The pipeline's error repeats its first command's; each is read.
	_, _ = pc.conn.Pipelined(ctx, func(pl redis.Pipeliner) error {
		info = pl.Info(ctx, "replication")
		set = pl.Set(ctx, pc.key, strconv.FormatUint(pc.seq, 10), time.Hour)
		return nil
	})
	err = set.Err()
	var refused redis.Error
	switch ierr := info.Err(); {
	case err != nil:
	case ierr == nil:
		p.ReplID, p.Connected, err = parseReplication(info.Val())
	case errors.As(ierr, &refused):
		// A server that refuses INFO replication (an in-memory stand-in
		// such as the dev stack's, a managed service that restricts it)
		// tells of no replica to wait for and no failover.
		p.NoReplicationInfo = true
		return p
	default:
		err = ierr
	}
	if err != nil {
		r.drop(addr)
		p.Err = permissionHint(err)
		return p
	}
	r.mu.Lock()
	e := r.most[addr]
	if e.replID != p.ReplID {
		e = expectation{replID: p.ReplID}
	}
	e.most = max(e.most, p.Connected)
	r.most[addr] = e
	r.mu.Unlock()
	p.Needed = min(r.want, e.most)
	if p.Needed == 0 {
		return p
	}
	if p.Connected < p.Needed {
		// A replica is away: WAIT would only sit out its timeout.
		return p
	}
	// WAIT blocks the connection up to the timeout; the context's
	// deadline must outlast it.
	wctx, cancel := context.WithTimeout(ctx, r.timeout+5*time.Second)
	defer cancel()
	n, err := pc.conn.Wait(wctx, p.Needed, r.timeout).Result()
	if err != nil {
		r.drop(addr)
		p.Err = permissionHint(err)
		return p
	}
	p.Acked = int(n)
	return p
}

// permissionHint says what to grant when the Redis user may not run a
// command of the round (an ACL without WAIT, or without writes to fg:*).
func permissionHint(err error) error {
	var re redis.Error
	if errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOPERM") {
		return fmt.Errorf("%w (the Redis user needs +wait +info and writes to fg:*: docs/operations.md, Redis access)", err)
	}
	return err
}

// parseReplication reads master_replid and the replicas from INFO
// replication, and refuses a server that is not a primary. connected
// counts the replicas in state "online" (slaveN lines): one still in its
// initial synchronisation (wait_bgsave, send_bulk; Redis waits
// repl-diskless-sync-delay, 5 s by default, before it even starts) holds
// no copy yet and acknowledges nothing, so WAIT would only sit out its
// timeout for it.
func parseReplication(info string) (replID string, connected int, err error) {
	role := ""
	listed, online := -1, 0
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch {
		case k == "role":
			role = v
		case k == "master_replid":
			replID = v
		case k == "connected_slaves":
			listed, err = strconv.Atoi(v)
			if err != nil {
				return "", 0, fmt.Errorf("INFO replication: connected_slaves %q: %w", v, err)
			}
		case strings.HasPrefix(k, "slave") && strings.Contains(","+v+",", ",state=online,"):
			online++
		}
	}
	switch {
	case role != "master":
		return "", 0, fmt.Errorf("not a primary (role %q)", role)
	case replID == "":
		return "", 0, errors.New("INFO replication has no master_replid")
	case listed < 0:
		return "", 0, errors.New("INFO replication has no connected_slaves")
	}
	return replID, online, nil
}

// pinnedFor returns the connection pinned to the primary c, with its
// marker key, creating them on first use.
func (r *Replication) pinnedFor(ctx context.Context, c *redis.Client) (*pinned, error) {
	addr := c.Options().Addr
	r.mu.Lock()
	pc := r.conns[addr]
	r.mu.Unlock()
	if pc != nil {
		return pc, nil
	}
	key := "fg:replicated:" + r.owner
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		// A key whose hash tag puts it in a slot this primary owns; the
		// client's own slot map says which (MasterForKey).
		found := false
		for i := 0; i < 4096 && !found; i++ {
			k := fmt.Sprintf("fg:replicated:{%s:%d}", r.owner, i)
			m, err := cc.MasterForKey(ctx, k)
			if err != nil {
				return nil, err
			}
			if m.Options().Addr == addr {
				key, found = k, true
			}
		}
		if !found {
			return nil, fmt.Errorf("redis %s owns no slot", addr)
		}
	}
	pc = &pinned{conn: c.Conn(), key: key}
	r.mu.Lock()
	r.conns[addr] = pc
	r.mu.Unlock()
	return pc, nil
}

// drop closes the connection pinned to addr after an error: the next
// round opens another (and finds the marker's slot again).
func (r *Replication) drop(addr string) {
	r.mu.Lock()
	pc := r.conns[addr]
	delete(r.conns, addr)
	r.mu.Unlock()
	if pc != nil {
		_ = pc.conn.Close()
	}
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		// A failed primary, a promoted replica or moved slots: read the
		// topology again before the next round.
		cc.ReloadState(context.Background())
	}
}

// Close closes the pinned connections.
func (r *Replication) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for addr, pc := range r.conns {
		_ = pc.conn.Close()
		delete(r.conns, addr)
	}
}

// LoadScript loads script into the script cache of every primary of rdb,
// the servers that run it. go-redis's Script.Load on a cluster client asks
// replicas too, so one replica that stopped answering (paused, cut off)
// would fail the load, and with it the writes waiting for the script.
func LoadScript(ctx context.Context, rdb redis.UniversalClient, script *redis.Script) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return script.Load(ctx, rdb).Err()
	}
	return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return script.Load(ctx, c).Err()
	})
}
