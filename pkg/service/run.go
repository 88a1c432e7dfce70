package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// Flags is what a binary's configuration provides.
type Flags interface {
	RegisterFlags(fs *flag.FlagSet)
}

// Load parses args into cfg. It returns done=true when the process should
// exit with the returned error (nil after -help or -config.verify).
func Load(name, about string, cfg Flags, args []string, stdout, stderr io.Writer) (done bool, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	fs.Usage = config.Usage(fs, name, about)
	opts, err := config.Load(fs, args, cfg)
	if errors.Is(err, flag.ErrHelp) {
		return true, nil
	}
	if err != nil {
		return true, err
	}
	if err := unknownEnv(fs, os.Environ()); err != nil {
		return true, err
	}
	if opts.Verify {
		out, err := yaml.Marshal(cfg)
		if err != nil {
			return true, err
		}
		fmt.Fprintf(stdout, "# configuration is valid\n%s", out)
		return true, nil
	}
	return false, nil
}

// SignalContext is cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// unknownEnv rejects FLEETGATE_* variables that match no flag: a misspelled
// variable would otherwise be ignored without a word.
func unknownEnv(fs *flag.FlagSet, environ []string) error {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[config.EnvName(f.Name)] = true })
	var bad []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "FLEETGATE_") && !known[name] {
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("environment variable %s is not a setting of %s (see -help for the list)", strings.Join(bad, ", "), fs.Name())
	}
	return nil
}
