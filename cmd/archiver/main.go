// Command archiver will write every Kafka record to MongoDB (issue #4). It is
// a placeholder until then and says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "archiver: not implemented yet; the MongoDB archive arrives with the archiver issue (#4). Nothing was started.")
	os.Exit(2)
}
