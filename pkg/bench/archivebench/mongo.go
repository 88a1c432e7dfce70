package archivebench

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/internal/ferretdb"
)

// ferretProcess is a FerretDB the bench started: SQLite backend, data in a
// temporary directory removed by stop.
type ferretProcess struct {
	uri, addr, dir string
	pid            int
	cmd            *exec.Cmd
	exited         chan error
}

// startFerret builds FerretDB once into the user cache (as the tests do)
// and starts it on a free loopback port.
func startFerret(progress func(string)) (*ferretProcess, error) {
	bin, err := ferretdb.Binary()
	if err != nil {
		return nil, fmt.Errorf("no -mongodb-uri and no FerretDB: %w", err)
	}
	dir, err := os.MkdirTemp("", "fleetgate-bench-ferretdb-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	logPath := filepath.Join(dir, "ferretdb.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--handler=sqlite", "--sqlite-url=file:"+data+"/", "--listen-addr="+addr,
		"--telemetry=disable", "--log-level=warn", "--state-dir="+dir, "--debug-addr=-")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: an interrupt of the bench does not stop the
	// server under a run that is shutting down; stop kills it.
	cmd.SysProcAttr = ownGroup()
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting ferretdb: %w", err)
	}
	f := &ferretProcess{uri: "mongodb://" + addr + "/", addr: addr, dir: dir, pid: cmd.Process.Pid, cmd: cmd, exited: make(chan error, 1)}
	go func() { f.exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case werr := <-f.exited:
			log, _ := os.ReadFile(logPath)
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("ferretdb exited at start (%v):\n%s", werr, log)
		default:
		}
		if time.Now().After(deadline) {
			f.stop()
			return nil, fmt.Errorf("ferretdb did not listen on %s within 30s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	progress(fmt.Sprintf("no -mongodb-uri: started FerretDB %s (SQLite backend) from %s on %s, pid %d, data in %s",
		ferretdb.Version, bin, addr, f.pid, data))
	return f, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// stop kills the server and removes its data.
func (f *ferretProcess) stop() {
	killGroup(f.cmd.Process)
	select {
	case <-f.exited:
	case <-time.After(10 * time.Second):
	}
	_ = os.RemoveAll(f.dir)
}

// connectMongo connects to uri and waits until the server answers a ping.
// timeout is the client's operation timeout, as archive.Open sets it.
func connectMongo(ctx context.Context, uri, appName string, timeout time.Duration) (*mongo.Client, error) {
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetAppName(appName).
		SetServerSelectionTimeout(timeout).SetTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("mongodb-uri: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := client.Ping(ctx, nil)
		if err == nil {
			return client, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			_ = client.Disconnect(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("mongodb at %s does not answer: %w", redactURI(uri), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// redactURI is uri without credentials and options, for printing.
func redactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(a mongodb uri that does not parse)"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}

// countAndDrop counts the documents of collection in db and drops db
// unless keep.
func countAndDrop(ctx context.Context, client *mongo.Client, db, collection string, keep bool) (int64, error) {
	n, err := client.Database(db).Collection(collection).CountDocuments(ctx, bson.D{})
	if err != nil {
		return 0, fmt.Errorf("counting the documents of %s.%s: %w", db, collection, err)
	}
	if !keep {
		if err := client.Database(db).Drop(ctx); err != nil {
			return n, fmt.Errorf("dropping database %s: %w", db, err)
		}
	}
	return n, nil
}
