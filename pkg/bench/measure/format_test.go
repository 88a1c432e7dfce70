package measure

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFormatting(t *testing.T) {
	require.Equal(t, "1,234,568", FormatRate(1234567.6))
	require.Equal(t, "-1,000", FormatCount(-1000))
	require.Equal(t, "999", FormatCount(999))
	require.Equal(t, "41µs", FormatDuration(41_000))
	require.Equal(t, "1.25ms", FormatDuration(1_250_000))
	require.Equal(t, "2.5s", FormatDuration(2_500_000_000))
	require.Equal(t, "7.5 KiB", FormatBytes(7680))
	require.Equal(t, "-512 B", FormatBytes(-512))
}
