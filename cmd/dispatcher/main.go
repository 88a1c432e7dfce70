// Command dispatcher will fan every Kafka record out to the subscribed MQTT
// sessions (issue #3). It is a placeholder until then and says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "dispatcher: not implemented yet; delivery to subscribers arrives with the pub/sub issue (#3). Nothing was started.")
	os.Exit(2)
}
