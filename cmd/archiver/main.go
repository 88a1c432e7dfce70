// Command archiver runs a fleetgate archiver: a Kafka consumer-group member
// that writes every inbound record, session event, delivery receipt and
// subscription change to MongoDB, exactly once, with TTL retention.
package main

import (
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"os"

	"github.com/fleetgate/fleetgate/pkg/archiver"
	"github.com/fleetgate/fleetgate/pkg/service"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "archiver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var cfg archiver.ServiceConfig
	if done, err := service.Load("archiver", "fleetgate archiver: writes every Kafka record, session event, delivery receipt and subscription to MongoDB.", &cfg, args, os.Stdout, os.Stderr); done {
		return err
	}
	log := telemetry.NewLogger(cfg.Log, os.Stderr)
	defer gcheadroom.Start(cfg.GC, log).Stop()
	defer procs.Start(cfg.Procs, log).Stop()
	tel, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return archiver.NewService(cfg, log, tel).Run(ctx)
}
