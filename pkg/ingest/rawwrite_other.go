//go:build !unix

package ingest

import "errors"

// writeFD: no connection offers its socket on this system (the frontend's
// RawWriter reports none), so the flush queue never writes one itself.
func writeFD(uintptr, []byte) (int, error) { return 0, errors.ErrUnsupported }
