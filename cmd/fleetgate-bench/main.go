// Command fleetgate-bench is fleetgate's load generator: it publishes with a
// window of QoS 1/2 publishes in flight per connection (or on an open-loop
// schedule), holds thousands of idle connections to measure a broker's memory
// per connection, and compares brokers side by side. See docs/benchmarks.md
// and test/bench/run.sh.
package main

import (
	"fmt"
	"os"

	"github.com/fleetgate/fleetgate/pkg/bench"
	"github.com/fleetgate/fleetgate/pkg/service"
)

func main() {
	ctx, stop := service.SignalContext()
	err := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		// A bare ErrUsage was explained by the usage text already.
		if err != bench.ErrUsage { //nolint:errorlint // only the bare sentinel is silent

			fmt.Fprintln(os.Stderr, "fleetgate-bench:", err)
		}
		os.Exit(1)
	}
}
