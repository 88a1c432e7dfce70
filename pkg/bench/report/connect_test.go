package report

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

func TestWriteConnectShowsTheMeasuredPassesAndEachPass(t *testing.T) {
	r := &load.ConnectResult{
		Config:         load.ConnectConfig{Addr: "127.0.0.1:1883", Clients: 200, Concurrency: 64, WarmupPasses: 1, Passes: 1, CredentialsFile: "/tmp/password.creds"},
		Connected:      200,
		Refused:        2,
		RefusedCodes:   map[string]int64{"0x86": 2},
		Measured:       100 * time.Millisecond,
		ConnectsPerSec: 2000,
		Connack:        measure.LatencySummary{Count: 200, P50: time.Millisecond, P99: 9 * time.Millisecond},
		Server:         &measure.ProcessUsage{CPUPercent: 90, CPUPerMessage: 450 * time.Microsecond},
		Passes: []load.ConnectPass{
			{Warmup: true, Connected: 200, ConnectsPerSec: 30, Wall: 6 * time.Second},
			{Connected: 200, Refused: 2, ConnectsPerSec: 2000, Wall: 100 * time.Millisecond},
		},
	}
	var out bytes.Buffer
	require.NoError(t, WriteConnect(&out, r))
	for _, want := range []string{"200 devices, 64 at a time", "credentials of /tmp/password.creds", "1 warm-up and 1 measured",
		"connects/s", "2,000", "p99 9ms", "refused 2 (0x86×2)", "450µs cpu/connect", "pass 1 (warm-up)", "30/s", "pass 2 (measured)"} {
		require.Contains(t, out.String(), want)
	}
}
