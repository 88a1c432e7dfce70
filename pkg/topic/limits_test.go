package topic

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLimitsCheck(t *testing.T) {
	l := Limits{MaxLength: 10, MaxLevels: 3}
	for _, tc := range []struct {
		name, s string
		ok      bool
	}{
		{"a topic at both bounds passes", "abc/de/fgh", true},
		{"one byte more is over the length", "abc/de/fghi", false},
		{"one level more is over the levels", "a/b/c/d", false},
		{"an empty level counts", "a//b/", false},
		{"a filter is measured the same way", "a/+/#", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Check(tc.s)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, ErrOverLimit)
		})
	}
	assert.NoError(t, Limits{}.Check(strings.Repeat("a/", 30000)), "the zero value has no limit")
}
