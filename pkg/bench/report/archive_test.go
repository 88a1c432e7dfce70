package report

import (
	"bytes"
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/archivebench"
)

// archiveResult is a result of the archive benchmark with the flag defaults
// and the given documents/s of each side.
func archiveResult(t *testing.T, archiver, plain float64) *archivebench.Result {
	t.Helper()
	var cfg archivebench.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	side := func(name string, rate float64) *archivebench.SideResult {
		return &archivebench.SideResult{Side: name, DocsPerSec: rate, SteadyDocsPerSec: rate, Documents: 10,
			Runs: []*archivebench.RunResult{{Side: name, DocsPerSec: rate, Documents: 10}}}
	}
	return &archivebench.Result{Config: cfg, Archiver: side(archivebench.SideArchiver, archiver), Plain: side(archivebench.SidePlain, plain),
		Ratio: archiver / plain, SteadyRatio: archiver / plain, Preload: archivebench.Preload{Records: 10}}
}

func TestWriteArchiveSaysWhenTheTargetIsMissed(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, WriteArchive(&out, archiveResult(t, 700, 1000)))
	require.Contains(t, out.String(), "0.70x from start (target >= 0.8x: NOT met)")
	require.Contains(t, out.String(), "mongodb cpu")
}

func TestWriteArchiveShowsTheServersCPUWhenItsPIDIsKnown(t *testing.T) {
	res := archiveResult(t, 900, 1000)
	res.Archiver.Server = &archivebench.ServerUsage{CPUPerDoc: 20_000, CPUPercent: 80}
	res.Plain.Server = &archivebench.ServerUsage{CPUPerDoc: 18_000, CPUPercent: 90}
	var out bytes.Buffer
	require.NoError(t, WriteArchive(&out, res))
	require.Contains(t, out.String(), "mongodb cpu/doc")
	require.Contains(t, out.String(), "0.90x from start (target >= 0.8x: met)")
}
