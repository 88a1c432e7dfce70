// Command ferretdb-build builds the FerretDB binary the tests run as their
// MongoDB-wire server into the user cache (once per machine) and prints its
// path. .ci/run runs it before the tests, so test packages that start
// FerretDB in parallel find it built.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/fleetgate/fleetgate/internal/ferretdb"
)

func main() {
	start := time.Now()
	bin, err := ferretdb.Binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-build:", err)
		os.Exit(1)
	}
	fmt.Printf("ferretdb %s at %s (%s)\n", ferretdb.Version, bin, time.Since(start).Round(time.Second))
}
