package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/fleetgate/fleetgate/pkg/bench/archivebench"
	"github.com/fleetgate/fleetgate/pkg/bench/report"
)

// mainArchive runs `fleetgate-bench archive`. The archiver's own log lines
// go to stderr at -log.level (warn by default).
func mainArchive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench archive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg archivebench.Config
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	level := fs.String("log.level", "warn", "Level of the archiver's own log lines on stderr: debug, info, warn or error.")
	var lvl slog.Level
	validate := func() error {
		if err := lvl.UnmarshalText([]byte(strings.ToUpper(*level))); err != nil {
			return fmt.Errorf("log.level: %q is not debug, info, warn or error", *level)
		}
		return cfg.Validate()
	}
	if done, err := parse(fs, args, validate); done || err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	res, err := archivebench.Run(ctx, cfg, log, c.progress(stderr))
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return report.WriteArchive(w, res) })
}
