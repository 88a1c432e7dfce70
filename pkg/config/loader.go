package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// FileFlag is the flag that names the optional YAML configuration file.
const FileFlag = "config.file"

// VerifyFlag is the flag that makes a binary validate its configuration and
// exit without starting anything.
const VerifyFlag = "config.verify"

// EnvName returns the environment variable that overrides the flag name:
// FLEETGATE_ followed by the upper-cased name with dots and dashes as
// underscores, e.g. kafka.brokers → FLEETGATE_KAFKA_BROKERS.
func EnvName(flagName string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return "FLEETGATE_" + strings.ToUpper(r.Replace(flagName))
}

// Validator is implemented by configurations that check themselves.
type Validator interface {
	Validate() error
}

// Options are the generic switches every binary gets next to its own flags.
type Options struct {
	File   string
	Verify bool
}

// Load parses args into fs, whose flags must already be registered with
// their defaults written into target, then layers the YAML file named by
// -config.file, the FLEETGATE_* environment and the explicit flags on top,
// and validates target when it is a Validator. The returned error names the
// field, variable or flag that is wrong.
func Load(fs *flag.FlagSet, args []string, target any) (Options, error) {
	var opts Options
	fs.StringVar(&opts.File, FileFlag, "", "Path to a YAML configuration file; its keys mirror the flag names, with dashes as underscores (kafka.client-id → kafka: {client_id: ...}). Flags and FLEETGATE_* environment variables override it.")
	fs.BoolVar(&opts.Verify, VerifyFlag, false, "Validate the configuration, print it and exit.")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	if opts.File == "" {
		opts.File = os.Getenv(EnvName(FileFlag))
	}
	if opts.File != "" {
		data, err := os.ReadFile(opts.File)
		if err != nil {
			return opts, fmt.Errorf("reading %s: %w", FileFlag, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(target); err != nil && !errors.Is(err, io.EOF) {
			return opts, fmt.Errorf("parsing %s %s: %w", FileFlag, opts.File, err)
		}
	}

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || explicit[f.Name] || f.Name == FileFlag {
			return
		}
		name := EnvName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("environment variable %s (flag -%s): invalid value %q: %w", name, f.Name, v, err)
			}
		}
	})
	if envErr != nil {
		return opts, envErr
	}

	// Explicit flags win over the file and the environment.
	if opts.File != "" {
		if err := fs.Parse(args); err != nil {
			return opts, err
		}
	}
	if v, ok := target.(Validator); ok {
		if err := v.Validate(); err != nil {
			return opts, fmt.Errorf("invalid configuration: %w", err)
		}
	}
	return opts, nil
}

// Usage returns a flag.Usage function that lists every flag with its
// environment variable.
func Usage(fs *flag.FlagSet, name, about string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage of %s:\n  %s\n\nEvery flag can also be set with the environment variable shown, or in the YAML file given by -config.file.\n\n", name, about)
		fs.VisitAll(func(f *flag.Flag) {
			typ, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  -%s %s\n    \t%s", f.Name, typ, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintf(w, "\n    \tenv %s\n", EnvName(f.Name))
		})
	}
}
