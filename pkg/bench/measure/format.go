package measure

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// FormatRate prints a rate with thousands separators.
func FormatRate(v float64) string { return FormatCount(math.Round(v)) }

// FormatCount prints a whole number with thousands separators.
func FormatCount(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatDuration prints a latency with three significant digits.
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// FormatBytes prints a size in binary units.
func FormatBytes(v float64) string {
	neg := v < 0
	v = math.Abs(v)
	var s string
	switch {
	case v < 1<<10:
		s = fmt.Sprintf("%.0f B", v)
	case v < 1<<20:
		s = fmt.Sprintf("%.1f KiB", v/(1<<10))
	case v < 1<<30:
		s = fmt.Sprintf("%.1f MiB", v/(1<<20))
	default:
		s = fmt.Sprintf("%.2f GiB", v/(1<<30))
	}
	if neg {
		return "-" + s
	}
	return s
}
