package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/stretchr/testify/require"
)

func TestMainRetainedPrintsJSON(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	err := Main(context.Background(), []string{"retained", "-addr", addr, "-messages", "500", "-publishers", "3",
		"-topic-prefix", "cli-retained", "-server-pid", fmt.Sprint(broker.PID), "-json"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	var res load.RetainedResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	require.EqualValues(t, 500, res.Unique)
	require.True(t, res.Complete)
	require.Positive(t, res.Memory.PeakRSS)
	require.Contains(t, errOut.String(), "subscribing to cli-retained/#")
}

// TestMainCompareRetainedPrintsTheRatios compares the broker with itself
// under two names: every row of the table has both columns and the ratio.
func TestMainCompareRetainedPrintsTheRatios(t *testing.T) {
	addr := broker.Require(t)
	var out, errOut bytes.Buffer
	jsonOut := filepath.Join(t.TempDir(), "retained.json")
	err := Main(context.Background(), []string{"compare", "retained",
		"-target", fmt.Sprintf("one=%s,pid=%d", addr, broker.PID), "-target", fmt.Sprintf("two=%s,pid=%d", addr, broker.PID),
		"-messages", "400", "-topic-prefix", "cli-compare-retained", "-rounds", "1", "-pause", "0s", "-quiet", "-json-out", jsonOut}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	table := out.String()
	require.Regexp(t, `SUBSCRIBE → last message +\S+ +\S+ +\d+\.\d\dx`, table)
	require.Regexp(t, `peak RSS +\S+ MiB +\S+ MiB +\d+\.\d\dx`, table)
	require.Regexp(t, `messages arrived \(all rounds\) +400 +400 +1\.00x`, table)
	require.Contains(t, table, "one per round: 400 of 400")
	require.Empty(t, errOut.String())
	b, err := os.ReadFile(jsonOut)
	require.NoError(t, err)
	var res compare.Result
	require.NoError(t, json.Unmarshal(b, &res))
	require.Len(t, res.Result("one").RetainedRounds, 1)
	require.EqualValues(t, 400, res.Result("two").Retained.Unique)
}
