package benchtest

import (
	"flag"
	"io"
)

// NewFlagSet returns a flag set whose registration fills in a
// configuration's defaults, and which prints nothing when parsing fails.
func NewFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}
