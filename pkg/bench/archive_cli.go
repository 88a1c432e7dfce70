package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// mainArchive runs `fleetgate-bench archive`. The archiver's own log lines
// go to stderr at -log.level (warn by default).
func mainArchive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench archive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg ArchiveConfig
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
	res, err := RunArchive(ctx, cfg, log, Hooks{Progress: c.progress(stderr)})
	if err != nil {
		return err
	}
	return c.report(stdout, res, func(w io.Writer) error { return WriteArchive(w, res) })
}
