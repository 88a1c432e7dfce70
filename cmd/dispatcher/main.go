// Command dispatcher runs a fleetgate dispatcher: a Kafka consumer-group
// member that routes every inbound record to the queues of the subscribed
// sessions in Redis, following the subscription change log.
package main

import (
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"os"

	"github.com/fleetgate/fleetgate/pkg/dispatch"
	"github.com/fleetgate/fleetgate/pkg/service"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var cfg dispatch.ServiceConfig
	if done, err := service.Load("dispatcher", "fleetgate dispatcher: routes every inbound record to the subscribed sessions' queues in Redis.", &cfg, args, os.Stdout, os.Stderr); done {
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
	return dispatch.NewService(cfg, log, tel).Run(ctx)
}
