//go:build !unix

package measure

import (
	"errors"
	"time"
)

// SelfCPUTime returns 0: the benchmark tool reads no CPU time of its own on
// this system.
func SelfCPUTime() time.Duration { return 0 }

// RaiseFileLimit: there is no open-file limit to raise on this system.
func RaiseFileLimit() (uint64, error) {
	return 0, errors.ErrUnsupported
}
