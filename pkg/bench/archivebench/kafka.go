package archivebench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// archiveKafka is the Kafka the records are preloaded into: an in-process
// kfake cluster, or the brokers of -brokers with topics of the run's own.
type archiveKafka struct {
	desc    string
	brokers []string
	// inbound holds the records; events and changes are the other topics
	// the archiver follows, empty here.
	inbound, events, changes string

	cluster *kfake.Cluster // nil with -brokers
	cl      *kgo.Client
	adm     *kadm.Client
}

// openArchiveKafka starts kfake or connects to cfg.Brokers and creates the
// inbound topic. The topic names carry runID, so a real Kafka's earlier
// data is never read.
func openArchiveKafka(ctx context.Context, cfg Config, runID string) (*archiveKafka, error) {
	prefix := "fleetgate-bench.archive." + runID + "."
	k := &archiveKafka{inbound: prefix + "inbound", events: prefix + "events", changes: prefix + "subscriptions"}
	if cfg.Brokers == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return nil, fmt.Errorf("starting kfake: %w", err)
		}
		k.cluster, k.brokers = c, c.ListenAddrs()
		k.desc = "kfake (franz-go's Kafka-protocol cluster) in this process, 1 broker"
	} else {
		k.brokers = strings.Split(cfg.Brokers, ",")
		k.desc = "brokers " + cfg.Brokers
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(k.brokers...),
		kgo.DefaultProduceTopic(k.inbound),
		// The preload is throughput, not latency: fuller batches.
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		k.close(ctx)
		return nil, fmt.Errorf("creating the kafka client: %w", err)
	}
	k.cl, k.adm = cl, kadm.NewClient(cl)
	resp, err := k.adm.CreateTopic(ctx, int32(cfg.Partitions), -1, nil, k.inbound)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		k.close(ctx)
		return nil, fmt.Errorf("creating topic %s: %w", k.inbound, err)
	}
	return k, nil
}

// close deletes the run's topics from a real Kafka and stops kfake.
func (k *archiveKafka) close(ctx context.Context) {
	if k.adm != nil && k.cluster == nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, _ = k.adm.DeleteTopics(dctx, k.inbound, k.events, k.changes)
		cancel()
	}
	if k.cl != nil {
		k.cl.Close()
	}
	if k.cluster != nil {
		k.cluster.Close()
	}
}

// preload produces cfg.Records records to the inbound topic and returns
// them with their partitions and offsets, for the plain loop.
func (k *archiveKafka) preload(ctx context.Context, cfg Config, progress func(string)) ([]*kgo.Record, Preload, error) {
	start := time.Now()
	rng := newArchiveRand()
	// Millisecond timestamps: a record read back from Kafka has no more.
	base := time.Now().Truncate(time.Millisecond)
	recs := make([]*kgo.Record, cfg.Records)
	var st Preload
	errc := make(chan error, 1)
	for i := range recs {
		m := archiveMessage(rng, cfg, i, base.Add(time.Duration(i)*time.Millisecond))
		r := kafkarecord.Encode(k.inbound, m)
		recs[i] = r
		st.RecordBytes += float64(len(r.Key) + len(r.Value))
		for _, h := range r.Headers {
			st.RecordBytes += float64(len(h.Key) + len(h.Value))
		}
		st.PayloadBytes += float64(len(r.Value))
		st.Headers += float64(len(r.Headers))
		k.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := k.cl.Flush(ctx); err != nil {
		return nil, st, fmt.Errorf("preloading %s: %w", k.inbound, err)
	}
	select {
	case err := <-errc:
		return nil, st, fmt.Errorf("preloading %s: %w", k.inbound, err)
	default:
	}
	ends, err := k.adm.ListEndOffsets(ctx, k.inbound)
	if err != nil {
		return nil, st, fmt.Errorf("listing the end offsets of %s: %w", k.inbound, err)
	}
	var total int64
	var errs []error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && !errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, o.Err)
		}
		total += o.Offset
	})
	if err := errors.Join(errs...); err != nil {
		return nil, st, fmt.Errorf("listing the end offsets of %s: %w", k.inbound, err)
	}
	if total != int64(cfg.Records) {
		return nil, st, fmt.Errorf("preloading %s: the topic holds %d records, want %d", k.inbound, total, cfg.Records)
	}
	n := float64(cfg.Records)
	st.Records = cfg.Records
	st.RecordBytes /= n
	st.PayloadBytes /= n
	st.Headers /= n
	st.Took = time.Since(start)
	progress(fmt.Sprintf("preloaded %d records into %s (%d partitions) in %v: %.0f bytes each on average, %.0f of payload, %.1f headers",
		cfg.Records, k.inbound, cfg.Partitions, st.Took.Round(time.Millisecond), st.RecordBytes, st.PayloadBytes, st.Headers))
	return recs, st, nil
}

// newArchiveRand is the generator of the records: fixed, so every run of
// the bench writes the same shapes.
func newArchiveRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

var archiveRegions = []string{"eu-west", "us-east", "ap-south"}

// archiveMessage is the i-th inbound message: an MQTT 5 telemetry publish
// of one of cfg.Clients devices with a JSON payload, a content type, a
// payload format, an expiry and two user properties, as a fleet of devices
// would send.
func archiveMessage(rng *rand.Rand, cfg Config, i int, at time.Time) *kafkarecord.Message {
	dev := rng.IntN(cfg.Clients)
	client := fmt.Sprintf("device-%05d", dev)
	size := cfg.PayloadMin + rng.IntN(cfg.PayloadMax-cfg.PayloadMin+1)
	utf8 := byte(1)
	expiry := uint32(3600)
	return &kafkarecord.Message{
		ClientID:       client,
		Topic:          "fleet/" + archiveRegions[dev%len(archiveRegions)] + "/" + client + "/telemetry",
		Payload:        archivePayload(rng, client, i, at, size),
		QoS:            1,
		Protocol:       5,
		Kind:           kafkarecord.KindPublish,
		MessageID:      uuid.Must(uuid.NewV7()).String(),
		Node:           fmt.Sprintf("fleetgate-frontend-%d", dev%3),
		Username:       client,
		ReceivedAt:     at,
		ContentType:    "application/json",
		PayloadFormat:  &utf8,
		MessageExpiry:  &expiry,
		UserProperties: []kafkarecord.UserProperty{{Key: "fw", Value: "1.4.2"}, {Key: "schema", Value: "telemetry.v3"}},
	}
}

// archivePayload is a JSON reading of about size bytes (never less than
// its skeleton, about 100 bytes).
func archivePayload(rng *rand.Rand, client string, seq int, at time.Time, size int) []byte {
	b := make([]byte, 0, max(size, 128))
	b = fmt.Appendf(b, `{"device":%q,"seq":%d,"ts":%d,"temp":%.2f,"hum":%.1f,"bat":%d,"note":"`,
		client, seq, at.UnixMilli(), 15+rng.Float64()*15, 30+rng.Float64()*40, rng.IntN(101))
	for len(b) < size-2 {
		b = append(b, 'a'+byte(rng.IntN(26)))
	}
	return append(b, `"}`...)
}
