package devstack

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// devRun is a dev stack running in the test process.
type devRun struct {
	*Stack
	// banner is what the stack printed when it was up.
	banner string
	// logPath is the stack's log, shown when the test fails.
	logPath string
}

// parseConfig parses the dev stack's flags as fleetgate-dev would: everything on
// loopback ports of its own, then extra.
func parseConfig(t *testing.T, extra ...string) (Config, error) {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("fleetgate-dev", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	args := []string{
		"-dev.data-dir", t.TempDir(), "-dev.kafka-addr", "127.0.0.1:0", "-dev.redis-listen", freeAddr(t),
		"-dev.archiver-http-addr", "127.0.0.1:0", "-mqtt.tcp-addr", "127.0.0.1:0", "-mqtt.ws-addr", "",
		"-http.addr", "127.0.0.1:0", "-shutdown.timeout", "2s",
	}
	require.NoError(t, fs.Parse(append(args, extra...)))
	return cfg, cfg.Validate()
}

// startStack runs a dev stack with extra flags until the end of the test,
// when Run must return nil.
func startStack(t *testing.T, extra ...string) *devRun {
	t.Helper()
	cfg, err := parseConfig(t, extra...)
	require.NoError(t, err)
	// Writes to an *os.File are safe from any goroutine, also after the test.
	logFile, err := os.Create(filepath.Join(t.TempDir(), "devstack.log"))
	require.NoError(t, err)
	var out bytes.Buffer
	s := New(cfg, slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})), &out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "Run of a stopped stack")
		case <-time.After(30 * time.Second):
			t.Error("the stack did not stop within 30s of its context ending")
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("dev stack log:\n%s", b)
		}
		_ = logFile.Close()
	})
	select {
	case <-s.Started():
	case err := <-done:
		done <- err
		t.Fatalf("the stack ended before it was up: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the stack was not up within 30s")
	}
	// The banner is written before Started is closed.
	return &devRun{Stack: s, banner: out.String(), logPath: logFile.Name()}
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

func TestWithAMongoDBURITheDevStackArchivesWhatIsPublished(t *testing.T) {
	ferret.Require(t)
	mc, err := mongo.Connect(options.Client().ApplyURI(ferret.URI).SetServerSelectionTimeout(5 * time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	// Documents are keyed by their Kafka coordinates and every stack starts
	// a new Kafka: an archive left by an earlier run (-count) would hold
	// this run's _id already, and the archiver would skip the record as
	// written.
	require.NoError(t, mc.Database("mqtt").Drop(t.Context()))

	s := startStack(t, "-archive.mongodb-uri", ferret.URI,
		"-archive.batch-interval", "20ms", "-archive.retry-min-backoff", "20ms", "-archive.retry-max-backoff", "200ms")
	require.NotNil(t, s.Archiver, "archive.mongodb-uri runs an archiver")

	ops := s.Archiver.OpsAddr()
	require.NotEmpty(t, ops, "the archiver serves /metrics, /healthz and /readyz")
	assert.NotEqual(t, s.Frontend.OpsAddr(), ops, "the archiver has an operations port of its own")
	assert.Contains(t, s.banner, "http://"+ops+"/metrics")
	assert.Contains(t, s.banner, strings.TrimSuffix(ferret.URI, "/")+" database mqtt")
	require.Eventually(t, func() bool { return httpStatus("http://"+ops+"/readyz") == http.StatusOK },
		30*time.Second, 50*time.Millisecond, "the archiver never became ready")

	clientID := fmt.Sprintf("dev-device-%d", time.Now().UnixNano())
	topic := "sensors/" + clientID + "/temp"
	o := mqtt.NewClientOptions().AddBroker("tcp://" + s.Frontend.Addr(frontend.ListenerTCP)).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(15*time.Second), "connecting timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	tok = c.Publish(topic, 1, false, "21.5")
	require.True(t, tok.WaitTimeout(15*time.Second), "no PUBACK")
	require.NoError(t, tok.Error())

	messages := mc.Database("mqtt").Collection("message")
	var doc bson.M
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return messages.FindOne(ctx, bson.D{{Key: "topic", Value: topic}}).Decode(&doc) == nil
	}, 30*time.Second, 50*time.Millisecond, "no document of the publish in mqtt.message")
	assert.Equal(t, "21.5", doc["data"])
	assert.Equal(t, clientID, doc["clientId"])
	assert.EqualValues(t, 1, doc["qos"])
	assert.Equal(t, "dev", doc["host"], "the node id of the dev stack's frontend")
}

func TestWithoutAMongoDBURITheDevStackRunsNoArchiverAndSaysHowToRunOne(t *testing.T) {
	s := startStack(t)
	assert.Nil(t, s.Archiver)
	assert.Contains(t, s.banner, "Archiver                  off (run one with -archive.mongodb-uri=mongodb://127.0.0.1:27017)")
	log, err := os.ReadFile(s.logPath)
	require.NoError(t, err)
	assert.Contains(t, string(log), "archiver off: set -archive.mongodb-uri (FLEETGATE_ARCHIVE_MONGODB_URI)")
}

func TestArchiverSettingsAreValidatedOnlyWithAMongoDBURI(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string // empty means valid
	}{
		{name: "archive settings without a URI run no archiver and are not checked", args: []string{"-archive.retention=-1h"}},
		{name: "a URI with the default archive settings is valid", args: []string{"-archive.mongodb-uri=mongodb://127.0.0.1:27017"}},
		{
			name:    "a bad archive setting with a URI names the flag",
			args:    []string{"-archive.mongodb-uri=mongodb://127.0.0.1:27017", "-archive.retention=-1h"},
			wantErr: "archive.retention",
		},
		{
			name:    "an archiver operations address without a port is refused",
			args:    []string{"-archive.mongodb-uri=mongodb://127.0.0.1:27017", "-dev.archiver-http-addr=localhost"},
			wantErr: "dev.archiver-http-addr",
		},
		{
			name:    "the archiver's operations address cannot be the frontend's",
			args:    []string{"-archive.mongodb-uri=mongodb://127.0.0.1:27017", "-http.addr=:9464", "-dev.archiver-http-addr=:9464"},
			wantErr: "dev.archiver-http-addr: :9464 is the frontend's http.addr already",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(t, tt.args...)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestTheStartupMessageShowsMongoDBWithoutCredentials(t *testing.T) {
	tests := []struct {
		name, uri, want string
	}{
		{name: "a plain URI keeps its host", uri: "mongodb://127.0.0.1:27017", want: "mongodb://127.0.0.1:27017"},
		{name: "the database and options are dropped", uri: "mongodb://db:27017/mqtt?replicaSet=rs0", want: "mongodb://db:27017"},
		{name: "user and password are dropped", uri: "mongodb://archiver:s3cr%40t@db:27017/?authSource=admin", want: "mongodb://db:27017"},
		{name: "options without a path are dropped", uri: "mongodb://u:p@db?tls=true", want: "mongodb://db"},
		{name: "every host of a replica set is kept", uri: "mongodb://u:p@a:27017,b:27017/", want: "mongodb://a:27017,b:27017"},
		{name: "an SRV URI keeps its scheme", uri: "mongodb+srv://u:p@cluster0.example.mongodb.net/?retryWrites=true", want: "mongodb+srv://cluster0.example.mongodb.net"},
		{name: "something that is not a URI is not shown", uri: "archiver:s3cret@db", want: "(not a mongodb:// URI)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, mongoHosts(tt.uri))
		})
	}
}
