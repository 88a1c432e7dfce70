package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
)

// TTLIndexName is the name of the TTL index on created of every collection
// with a retention.
const TTLIndexName = "created_ttl"

// MongoDB error codes the store handles.
const (
	codeDuplicateKey       = 11000
	codeBSONObjectTooLarge = 10334
	codeNotImplemented     = 238
	codeIndexNotFound      = 27
	codeNamespaceNotFound  = 26
)

// Store writes the archive to MongoDB.
type Store struct {
	cfg    Config
	log    *slog.Logger
	client *mongo.Client
	db     *mongo.Database

	// ttlUnsupported is set when the server rejected a TTL index: the
	// sweeper keeps the retention instead.
	ttlUnsupported atomic.Bool
}

// Open returns a Store for cfg. It does not wait for MongoDB: the driver
// connects in the background, and every operation fails (with a timeout)
// until the server answers.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	opts := options.Client().ApplyURI(cfg.MongoURI.Value()).SetAppName("fleetgate-archiver").
		SetServerSelectionTimeout(cfg.WriteTimeout).SetTimeout(cfg.WriteTimeout)
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("archive.mongodb-uri: %w", err)
	}
	return &Store{cfg: cfg, log: log, client: client, db: client.Database(cfg.Database)}, nil
}

// Close disconnects from MongoDB.
func (s *Store) Close(ctx context.Context) error { return s.client.Disconnect(ctx) }

// Ping checks that MongoDB answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	return s.db.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err()
}

// TTLSupported reports whether the server accepted the TTL indexes, as
// found by the last EnsureIndexes.
func (s *Store) TTLSupported() bool { return !s.ttlUnsupported.Load() }

// retention is one collection and how long its documents are kept.
type retention struct {
	collection string
	keep       time.Duration
}

func (s *Store) retentions() []retention {
	return []retention{
		{s.cfg.Collection, s.cfg.Retention},
		{s.cfg.ReceiptCollection, s.cfg.ReceiptRetention},
		{s.cfg.SessionEventCollection, s.cfg.SessionEventRetention},
	}
}

// EnsureIndexes creates the query indexes and the TTL indexes, and brings
// an existing TTL index to the configured retention in place (collMod), or
// drops it when the retention is 0. Where the server rejects TTL indexes,
// it logs so once and leaves retention to the sweeper.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	asc := func(keys ...string) bson.D {
		d := make(bson.D, len(keys))
		for i, k := range keys {
			d[i] = bson.E{Key: k, Value: 1}
		}
		return d
	}
	query := map[string][]index{
		s.cfg.Collection:             {{"clientId_created", asc("clientId", "created"), false}, {"topic_created", asc("topic", "created"), false}},
		s.cfg.ReceiptCollection:      {{"clientId_created", asc("clientId", "created"), false}, {"messageId", asc("messageId"), false}},
		s.cfg.SessionEventCollection: {{"clientId_created", asc("clientId", "created"), false}},
		s.cfg.SubscriptionCollection: {{"clientId_topic", asc("clientId", "topic"), true}, {"topic", asc("topic"), false}},
	}
	for _, coll := range []string{s.cfg.Collection, s.cfg.ReceiptCollection, s.cfg.SessionEventCollection, s.cfg.SubscriptionCollection} {
		if err := s.createMissing(ctx, coll, query[coll]); err != nil {
			return err
		}
	}
	unsupported := false
	for _, r := range s.retentions() {
		ok, err := s.ensureTTL(ctx, r)
		if err != nil {
			return err
		}
		unsupported = unsupported || !ok
	}
	if unsupported && !s.ttlUnsupported.Swap(true) {
		if s.cfg.Sweeper == "never" {
			s.log.Warn("mongodb rejects TTL indexes and archive.sweeper is never: expired documents are not deleted",
				"database", s.cfg.Database)
		} else {
			s.log.Warn("mongodb rejects TTL indexes; a sweeper deletes expired documents instead",
				"database", s.cfg.Database, "sweep_interval", s.cfg.SweepInterval)
		}
	}
	return nil
}

// index is a query index of a collection.
type index struct {
	name   string
	keys   bson.D
	unique bool
}

// createMissing creates the indexes of models that coll does not have
// yet (by name). Creating only the missing ones keeps a restart cheap, and
// avoids FerretDB 1.24 closing the connection on a createIndexes that
// names existing indexes.
func (s *Store) createMissing(ctx context.Context, coll string, want []index) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	existing, err := s.indexes(ctx, s.db.Collection(coll))
	if err != nil {
		return fmt.Errorf("listing the indexes of %s.%s: %w", s.cfg.Database, coll, err)
	}
	var missing []mongo.IndexModel
	for _, ix := range want {
		if _, ok := existing[ix.name]; !ok {
			missing = append(missing, mongo.IndexModel{Keys: ix.keys, Options: options.Index().SetName(ix.name).SetUnique(ix.unique)})
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := s.db.Collection(coll).Indexes().CreateMany(ctx, missing); err != nil {
		return fmt.Errorf("creating the indexes of %s.%s: %w", s.cfg.Database, coll, err)
	}
	return nil
}

// indexes returns the index specifications of coll by name; none when the
// collection does not exist yet.
func (s *Store) indexes(ctx context.Context, coll *mongo.Collection) (map[string]bson.M, error) {
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		if hasCode(err, codeNamespaceNotFound) {
			return map[string]bson.M{}, nil
		}
		return nil, err
	}
	var specs []bson.M
	if err := cur.All(ctx, &specs); err != nil {
		return nil, err
	}
	out := make(map[string]bson.M, len(specs))
	for _, spec := range specs {
		if name, ok := spec["name"].(string); ok {
			out[name] = spec
		}
	}
	return out, nil
}

// ensureTTL makes the TTL index of r match its retention. It returns false
// when the server does not implement TTL indexes.
func (s *Store) ensureTTL(ctx context.Context, r retention) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	coll := s.db.Collection(r.collection)
	current, found, err := s.ttlOf(ctx, coll)
	if err != nil {
		return true, fmt.Errorf("listing the indexes of %s.%s: %w", s.cfg.Database, r.collection, err)
	}
	want := int32(r.keep / time.Second)
	switch {
	case r.keep == 0 && !found:
		return true, nil
	case r.keep == 0:
		if err := coll.Indexes().DropOne(ctx, TTLIndexName); err != nil && !hasCode(err, codeIndexNotFound) {
			return true, fmt.Errorf("dropping the TTL index of %s.%s (retention 0): %w", s.cfg.Database, r.collection, err)
		}
		s.log.Info("ttl index dropped: documents are kept forever", "collection", r.collection)
		return true, nil
	case found && current == want:
		return true, nil
	case found:
		cmd := bson.D{{Key: "collMod", Value: r.collection}, {Key: "index", Value: bson.D{
			{Key: "name", Value: TTLIndexName}, {Key: "expireAfterSeconds", Value: want}}}}
		if err := s.db.RunCommand(ctx, cmd).Err(); err != nil {
			if isNotImplemented(err) {
				return false, nil
			}
			return true, fmt.Errorf("changing the TTL of %s.%s to %s (collMod): %w", s.cfg.Database, r.collection, r.keep, err)
		}
		s.log.Info("ttl index changed", "collection", r.collection, "from", time.Duration(current)*time.Second, "to", r.keep)
		return true, nil
	}
	_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "created", Value: 1}},
		Options: options.Index().SetName(TTLIndexName).SetExpireAfterSeconds(want)})
	if err != nil {
		if isNotImplemented(err) {
			return false, nil
		}
		return true, fmt.Errorf("creating the TTL index of %s.%s: %w", s.cfg.Database, r.collection, err)
	}
	return true, nil
}

// ttlOf returns the expireAfterSeconds of the TTL index of coll.
func (s *Store) ttlOf(ctx context.Context, coll *mongo.Collection) (int32, bool, error) {
	specs, err := s.indexes(ctx, coll)
	if err != nil {
		return 0, false, err
	}
	spec, ok := specs[TTLIndexName]
	if !ok {
		return 0, false, nil
	}
	switch v := spec["expireAfterSeconds"].(type) {
	case int32:
		return v, true, nil
	case int64:
		return int32(v), true, nil
	case float64:
		return int32(v), true, nil
	}
	// An index of that name without a TTL: made by someone else.
	return -1, true, nil
}

func isNotImplemented(err error) bool {
	return hasCode(err, codeNotImplemented) || strings.Contains(err.Error(), "not implemented")
}

func hasCode(err error, code int) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(code)
}

// InsertMessages inserts message documents.
func (s *Store) InsertMessages(ctx context.Context, docs []bson.D) (written, duplicates int, err error) {
	return s.insert(ctx, s.cfg.Collection, docs)
}

// InsertReceipts inserts delivery receipt documents.
func (s *Store) InsertReceipts(ctx context.Context, docs []bson.D) (written, duplicates int, err error) {
	return s.insert(ctx, s.cfg.ReceiptCollection, docs)
}

// InsertSessionEvents inserts session event documents.
func (s *Store) InsertSessionEvents(ctx context.Context, docs []bson.D) (written, duplicates int, err error) {
	return s.insert(ctx, s.cfg.SessionEventCollection, docs)
}

// insert writes docs with an unordered bulk insert. A duplicate key is a
// document written before (a redelivered record), so it counts as success.
// Documents MongoDB refuses for a reason writing them again cannot fix are
// returned in a *RejectedError, after every other document was written; any
// other error (transient: see Permanent) fails the whole call, and the
// caller writes every document again.
func (s *Store) insert(ctx context.Context, coll string, docs []bson.D) (written, duplicates int, err error) {
	if len(docs) == 0 {
		return 0, 0, nil
	}
	written, duplicates, rejected, err := s.insertMany(ctx, coll, docs)
	if err != nil && !tooLarge(err) {
		return 0, 0, err
	}
	if err != nil {
		// The whole command failed for a document it could not carry (too
		// large for a message), and perhaps wrote the documents before it:
		// write the halves again, down to that document alone.
		written, duplicates, rejected, err = s.insertHalves(ctx, coll, docs, 0)
		if err != nil {
			return 0, 0, err
		}
	}
	if len(rejected) > 0 {
		return written, duplicates, &RejectedError{Collection: coll, Documents: len(docs), Rejected: rejected}
	}
	return written, duplicates, nil
}

// insertHalves writes the two halves of docs, each as one insert and, when
// that fails as too large, by its halves again: a document too large alone
// is rejected. base is the position of docs[0] in the caller's documents.
func (s *Store) insertHalves(ctx context.Context, coll string, docs []bson.D, base int) (written, duplicates int, rejected []Rejected, err error) {
	if len(docs) == 1 {
		return 0, 0, []Rejected{{Index: base, Reason: ReasonTooLarge,
			Err: fmt.Errorf("document %d: %w", base, driver.ErrDocumentTooLarge)}}, nil
	}
	mid := len(docs) / 2
	for _, half := range []struct {
		docs []bson.D
		base int
	}{{docs[:mid], base}, {docs[mid:], base + mid}} {
		w, d, r, err := s.insertMany(ctx, coll, half.docs)
		if err != nil && tooLarge(err) {
			w, d, r, err = s.insertHalves(ctx, coll, half.docs, half.base)
		} else {
			for i := range r {
				r[i].Index += half.base
			}
		}
		if err != nil {
			return 0, 0, nil, err
		}
		written, duplicates, rejected = written+w, duplicates+d, append(rejected, r...)
	}
	return written, duplicates, rejected, nil
}

// insertMany is one unordered insert of docs. Write errors that are
// permanent come back as rejected; an error is a failure of the command
// (a transient one, or tooLarge).
func (s *Store) insertMany(ctx context.Context, coll string, docs []bson.D) (written, duplicates int, rejected []Rejected, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	anys := make([]any, len(docs))
	for i := range docs {
		anys[i] = docs[i]
	}
	_, err = s.db.Collection(coll).InsertMany(ctx, anys, options.InsertMany().SetOrdered(false))
	if err == nil {
		return len(docs), 0, nil, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return 0, 0, nil, err
	}
	for _, we := range bwe.WriteErrors {
		switch {
		case we.Code == codeDuplicateKey:
			duplicates++
		case permanentWriteError(bwe, we.WriteError):
			reason := ReasonRejected
			if we.Code == codeBSONObjectTooLarge {
				reason = ReasonTooLarge
			}
			rejected = append(rejected, Rejected{Index: we.Index, Reason: reason,
				Err: fmt.Errorf("document %d of %d: code %d: %s", we.Index, len(docs), we.Code, we.Message)})
		default:
			return 0, 0, nil, fmt.Errorf("document %d of %d: %w", we.Index, len(docs), err)
		}
	}
	return len(docs) - len(bwe.WriteErrors), duplicates, rejected, nil
}

// InsertDeadLetters inserts dead-letter documents into the dead-letter
// collection (Config.DeadLetterCollectionName), like the other inserts: a
// duplicate counts as written, a refused document comes back in a
// *RejectedError.
func (s *Store) InsertDeadLetters(ctx context.Context, docs []bson.D) (written, duplicates int, err error) {
	return s.insert(ctx, s.cfg.DeadLetterCollectionName(), docs)
}

// ApplySubscriptions makes the subscription collection hold ops: an upsert
// of the document of each subscription, a delete of each removed one. ops
// must hold at most one change per client id and filter (an unordered bulk
// write keeps no order); applying them twice gives the same collection.
// Changes MongoDB refuses for good come back in a *RejectedError (Index is
// the position in ops) after the others were applied.
func (s *Store) ApplySubscriptions(ctx context.Context, ops []SubscriptionOp) error {
	if len(ops) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	models := make([]mongo.WriteModel, 0, len(ops))
	for _, op := range ops {
		filter := bson.D{{Key: "clientId", Value: op.ClientID}, {Key: "topic", Value: op.Filter}}
		if op.Delete {
			models = append(models, mongo.NewDeleteOneModel().SetFilter(filter))
			continue
		}
		models = append(models, mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(subscriptionDocument(op)).SetUpsert(true))
	}
	_, err := s.db.Collection(s.cfg.SubscriptionCollection).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if err == nil || !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return err
	}
	var rejected []Rejected
	for _, we := range bwe.WriteErrors {
		if !permanentWriteError(bwe, we.WriteError) {
			return err
		}
		rejected = append(rejected, Rejected{Index: we.Index, Reason: ReasonRejected,
			Err: fmt.Errorf("change %d of %d: code %d: %s", we.Index, len(ops), we.Code, we.Message)})
	}
	return &RejectedError{Collection: s.cfg.SubscriptionCollection, Documents: len(ops), Rejected: rejected}
}

// RunSweeper deletes expired documents every archive.sweep-interval until
// ctx is done, where the server rejects TTL indexes (archive.sweeper auto)
// or always (archive.sweeper always). It returns nil at once when TTL
// indexes keep the retention. Call it after EnsureIndexes.
func (s *Store) RunSweeper(ctx context.Context) error {
	if s.cfg.Sweeper == "never" || (s.cfg.Sweeper == "auto" && s.TTLSupported()) {
		return nil
	}
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping expired documents failed; trying again at the next sweep", "err", err,
				"sweep_interval", s.cfg.SweepInterval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep deletes the documents whose created is older than their
// collection's retention at now, and returns how many it deleted by
// collection.
func (s *Store) Sweep(ctx context.Context, now time.Time) (map[string]int64, error) {
	deleted := map[string]int64{}
	for _, r := range s.retentions() {
		if r.keep == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		res, err := s.db.Collection(r.collection).DeleteMany(cctx,
			bson.D{{Key: "created", Value: bson.D{{Key: "$lt", Value: bson.NewDateTimeFromTime(now.Add(-r.keep))}}}})
		cancel()
		if err != nil {
			return deleted, fmt.Errorf("deleting expired documents of %s.%s: %w", s.cfg.Database, r.collection, err)
		}
		if res.DeletedCount > 0 {
			deleted[r.collection] = res.DeletedCount
			s.log.Info("expired documents deleted", "collection", r.collection, "deleted", res.DeletedCount,
				"retention", r.keep)
		}
	}
	return deleted, nil
}
