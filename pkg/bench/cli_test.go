package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMainRejectsUnknownSubcommands(t *testing.T) {
	var out, errOut bytes.Buffer
	require.ErrorIs(t, Main(context.Background(), nil, &out, &errOut), ErrUsage)
	require.ErrorIs(t, Main(context.Background(), []string{"soak"}, &out, &errOut), ErrUsage)
	require.ErrorIs(t, Main(context.Background(), []string{"compare", "-target", "x"}, &out, &errOut), ErrUsage)
	require.Contains(t, errOut.String(), "fleetgate-bench pub")
	require.NoError(t, Main(context.Background(), []string{"pub", "-help"}, &out, &errOut))
	require.ErrorContains(t, Main(context.Background(), []string{"pub", "-qos", "5"}, &out, &errOut), "qos")
}

func TestMainPubPrintsJSON(t *testing.T) {
	addr := needBroker(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"pub", "-addr", addr, "-publishers", "2", "-messages", "50",
		"-qos", "1", "-client-prefix", "cli", "-server-pid", fmt.Sprint(broker.pid), "-json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var res PubResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.EqualValues(t, 100, res.Acked)
	require.EqualValues(t, 100, res.Latency.Count)
	require.Contains(t, errOut.String(), "publishers connected")
}

func TestMainIdlePrintsATable(t *testing.T) {
	addr := needBroker(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"idle", "-addr", addr, "-clients", "30", "-settle", "0s",
		"-server-pid", fmt.Sprint(broker.pid), "-quiet"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	require.Contains(t, out.String(), "per connection")
	require.Empty(t, errOut.String())
}

func TestFormatting(t *testing.T) {
	require.Equal(t, "1,234,568", fmtRate(1234567.6))
	require.Equal(t, "-1,000", fmtCount(-1000))
	require.Equal(t, "999", fmtCount(999))
	require.Equal(t, "41µs", fmtDur(41_000))
	require.Equal(t, "1.25ms", fmtDur(1_250_000))
	require.Equal(t, "2.5s", fmtDur(2_500_000_000))
	require.Equal(t, "7.5 KiB", fmtBytes(7680))
	require.Equal(t, "-512 B", fmtBytes(-512))
}

func TestFreePortPrintsDistinctPorts(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"free-port", "3"}, &out, io.Discard))
	ports := strings.Fields(out.String())
	require.Len(t, ports, 3)
	require.NotEqual(t, ports[0], ports[1])
	require.NotEqual(t, ports[1], ports[2])
	require.ErrorIs(t, Main(context.Background(), []string{"free-port", "x"}, &out, io.Discard), ErrUsage)
}

func TestJSONOutWritesAFileBesideTheTable(t *testing.T) {
	addr := needBroker(t)
	path := filepath.Join(t.TempDir(), "idle.json")
	var out bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"idle", "-addr", addr, "-clients", "5", "-settle", "0s", "-quiet", "-json-out", path}, &out, io.Discard))
	require.Contains(t, out.String(), "connected")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var res IdleResult
	require.NoError(t, json.Unmarshal(b, &res))
	require.Equal(t, 5, res.Connected)
}

func TestMainWakeupMeasuresBothRoundTripKinds(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, Main(context.Background(), []string{"wakeup", "-round-trips", "50", "-gap", "100us", "-json"}, &out, &errOut), errOut.String())
	var res WakeupResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.Equal(t, 50, res.RoundTrips)
	require.Len(t, res.Rows, 2)
	require.Zero(t, res.Rows[0].Gap)
	require.Equal(t, 100*time.Microsecond, res.Rows[1].Gap)
	for _, r := range res.Rows {
		require.Positive(t, r.Wall, "a round trip takes time")
	}
	out.Reset()
	require.NoError(t, Main(context.Background(), []string{"wakeup", "-round-trips", "20"}, &out, &errOut))
	require.Contains(t, out.String(), "each message wakes a sleeping side")
	require.ErrorContains(t, Main(context.Background(), []string{"wakeup", "-gap", "0s"}, &out, &errOut), "-gap")
}
