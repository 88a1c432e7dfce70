// Command frontend runs a fleetgate MQTT frontend node: it accepts MQTT 3.1.1
// and 5.0 clients and writes every PUBLISH to Kafka before acknowledging it.
package main

import (
	"context"
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"os"
	"time"

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
	defer gcheadroom.Start(cfg.GC, log).Stop()
	defer procs.Start(cfg.Procs, log).Stop()
	tel, err := telemetry.NewMetrics()
	if err != nil {
		return err
	}
	tp, stopTracing, err := telemetry.NewTracerProvider(context.Background(), cfg.Tracing, "fleetgate-frontend")
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopTracing(ctx)
	}()
	var opts []frontend.Option
	if cfg.Tracing.OTLPEndpoint != "" {
		opts = append(opts, frontend.WithTracerProvider(tp))
	}
	srv, err := frontend.New(cfg, log, tel, opts...)
	if err != nil {
		return err
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return srv.Run(ctx)
}
