package measure

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseStatusKB(t *testing.T) {
	status := []byte("Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmRSS:\t    8612 kB\nThreads:\t1\n")
	v, err := parseStatusKB(status, "VmRSS:")
	require.NoError(t, err)
	require.EqualValues(t, 8612*1024, v)

	_, err = parseStatusKB([]byte("Name:\tkthreadd\n"), "VmRSS:")
	require.ErrorIs(t, err, ErrNoRSS)
	_, err = parseStatusKB([]byte("VmRSS:\t12 MB\n"), "VmRSS:")
	require.Error(t, err)
}

func TestParseStatCPUCountsFromTheLastParenthesis(t *testing.T) {
	// The command name may contain spaces and parentheses.
	stat := []byte("1234 (fleet gate (dev)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0")
	d, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, d) // (250+50) ticks at 100 Hz

	_, err = parseStatCPU([]byte("1234 no parens"))
	require.Error(t, err)
}

func TestReadsThisProcess(t *testing.T) {
	rss, err := ReadRSS(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, rss)
	_, err = ReadCPUTime(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, "measure.test", ReadName(os.Getpid()))
	require.Equal(t, "?", ReadName(0))
	require.False(t, SampleProcess(0).OK)
	require.True(t, SampleProcess(os.Getpid()).OK)
}

func TestRaiseFileLimitReachesTheHardLimit(t *testing.T) {
	limit, err := RaiseFileLimit()
	require.NoError(t, err)
	require.Positive(t, limit)
}
