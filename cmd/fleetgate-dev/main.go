// Command fleetgate-dev runs the whole fleetgate system in one process with
// nothing installed: an embedded Kafka-protocol broker on :9092 (kfake, data
// kept in .fleetgate-data), Redis, the MQTT frontend on :1883, a dispatcher
// and, given a MongoDB with -archive.mongodb-uri, an archiver (ops on :9466).
package main

import (
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"os"

	"github.com/fleetgate/fleetgate/pkg/devstack"
	"github.com/fleetgate/fleetgate/pkg/service"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

func main() {
	var cfg devstack.Config
	done, err := service.Load("fleetgate-dev", "fleetgate on one machine: embedded Kafka, the MQTT frontend, a dispatcher and, with -archive.mongodb-uri, an archiver.", &cfg, os.Args[1:], os.Stdout, os.Stderr)
	if err == nil && !done {
		log := telemetry.NewLogger(cfg.Frontend.Log, os.Stderr)
		defer gcheadroom.Start(cfg.Frontend.GC, log).Stop()
		defer procs.Start(cfg.Frontend.Procs, log).Stop()
		ctx, stop := service.SignalContext()
		defer stop()
		err = devstack.New(cfg, log, os.Stdout).Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetgate-dev:", err)
		os.Exit(1)
	}
}
