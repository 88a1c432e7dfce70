// Command frontend runs a fleetgate MQTT frontend node: it accepts MQTT 3.1.1
// and 5.0 clients and writes every PUBLISH to Kafka before acknowledging it.
package main

import (
	"fmt"
	"os"

	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/service"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "frontend:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var cfg frontend.Config
	if done, err := service.Load("frontend", "fleetgate MQTT frontend: every PUBLISH becomes a Kafka record, acknowledged after Kafka has it.", &cfg, args, os.Stdout, os.Stderr); done {
		return err
	}
	log := telemetry.NewLogger(cfg.Log, os.Stderr)
	tel, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	srv, err := frontend.New(cfg, log, tel)
	if err != nil {
		return err
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return srv.Run(ctx)
}
