package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testConfig is a small component configuration shaped like the real ones:
// nested yaml sections, dotted kebab-case flags and a Validate method.
type testConfig struct {
	Kafka struct {
		Brokers  StringList `yaml:"brokers"`
		ClientID string     `yaml:"client_id"`
		MaxBytes ByteSize   `yaml:"max_bytes"`
	} `yaml:"kafka"`
	Port  int  `yaml:"port"`
	Debug bool `yaml:"debug"`
}

var errBadPort = errors.New("port must not be negative")

func (c *testConfig) Validate() error {
	if c.Port < 0 {
		return errBadPort
	}
	return nil
}

func (c *testConfig) registerFlags(fs *flag.FlagSet) {
	c.Kafka.Brokers = StringList{"localhost:9092"}
	fs.Var(&c.Kafka.Brokers, "kafka.brokers", "Kafka seed brokers, comma-separated.")
	fs.StringVar(&c.Kafka.ClientID, "kafka.client-id", "fleetgate", "Kafka client id.")
	c.Kafka.MaxBytes = 1 << 20
	fs.Var(&c.Kafka.MaxBytes, "kafka.max-bytes", "Largest record.")
	fs.IntVar(&c.Port, "port", 1883, "MQTT port.")
	fs.BoolVar(&c.Debug, "debug", false, "Debug mode.")
}

// newFlagSet returns a flag set with cfg's flags registered and its output
// discarded, so parse errors do not clutter the test log.
func newFlagSet(cfg *testConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.registerFlags(fs)
	return fs
}

// writeFile writes content to a file in a fresh temporary directory and
// returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// clearEnv makes sure no FLEETGATE_* variable from the environment running
// the tests leaks into them; t.Setenv restores the values afterwards.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "FLEETGATE_") {
			t.Setenv(name, "")
			require.NoError(t, os.Unsetenv(name))
		}
	}
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct {
		name, flag, want string
	}{
		{"a single word is upper-cased", "port", "FLEETGATE_PORT"},
		{"dots become underscores", "kafka.brokers", "FLEETGATE_KAFKA_BROKERS"},
		{"dashes become underscores", "kafka.client-id", "FLEETGATE_KAFKA_CLIENT_ID"},
		{"several dots and dashes all become underscores", "a.b-c.d-e", "FLEETGATE_A_B_C_D_E"},
		{"the config file flag has a variable too", FileFlag, "FLEETGATE_CONFIG_FILE"},
		{"the verify flag has a variable too", VerifyFlag, "FLEETGATE_CONFIG_VERIFY"},
		{"mixed case is upper-cased", "Http.Addr", "FLEETGATE_HTTP_ADDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, EnvName(tc.flag))
		})
	}
}

func TestLoadPrecedence(t *testing.T) {
	const file = `
kafka:
  brokers: [file-1:9092, file-2:9092]
  client_id: from-file
  max_bytes: 2MiB
port: 1001
debug: false
`
	env := map[string]string{
		"FLEETGATE_KAFKA_BROKERS":   "env-1:9092,env-2:9092",
		"FLEETGATE_KAFKA_CLIENT_ID": "from-env",
		"FLEETGATE_KAFKA_MAX_BYTES": "3MiB",
		"FLEETGATE_PORT":            "1002",
		"FLEETGATE_DEBUG":           "true",
	}
	flags := []string{
		"-kafka.brokers=flag-1:9092,flag-2:9092",
		"-kafka.client-id=from-flag",
		"-kafka.max-bytes=4MiB",
		"-port=1003",
		"-debug=false",
	}
	type want struct {
		brokers  []string
		clientID string
		maxBytes ByteSize
		port     int
		debug    bool
	}
	var (
		defaults = want{[]string{"localhost:9092"}, "fleetgate", 1 << 20, 1883, false}
		fromFile = want{[]string{"file-1:9092", "file-2:9092"}, "from-file", 2 << 20, 1001, false}
		fromEnv  = want{[]string{"env-1:9092", "env-2:9092"}, "from-env", 3 << 20, 1002, true}
		fromFlag = want{[]string{"flag-1:9092", "flag-2:9092"}, "from-flag", 4 << 20, 1003, false}
	)
	for _, tc := range []struct {
		name             string
		file, env, flags bool
		fileFromEnv      bool
		want             want
	}{
		{name: "a value set in every layer comes from the flag", file: true, env: true, flags: true, want: fromFlag},
		{name: "without flags the environment wins over the file", file: true, env: true, want: fromEnv},
		{name: "without flags and environment the file wins over the defaults", file: true, want: fromFile},
		{name: "without any layer the defaults stay", want: defaults},
		{name: "flags win over the environment without a file", env: true, flags: true, want: fromFlag},
		{name: "flags win over the file without environment", file: true, flags: true, want: fromFlag},
		{name: "the environment wins over the defaults", env: true, want: fromEnv},
		{name: "flags win over the defaults", flags: true, want: fromFlag},
		{name: "a file named by FLEETGATE_CONFIG_FILE is read and flags still win", file: true, fileFromEnv: true, flags: true, want: fromFlag},
		{name: "a file named by FLEETGATE_CONFIG_FILE is read", file: true, fileFromEnv: true, want: fromFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			var args []string
			var path string
			if tc.file {
				path = writeFile(t, file)
				if tc.fileFromEnv {
					t.Setenv("FLEETGATE_CONFIG_FILE", path)
				} else {
					args = append(args, "-config.file="+path)
				}
			}
			if tc.env {
				for k, v := range env {
					t.Setenv(k, v)
				}
			}
			if tc.flags {
				args = append(args, flags...)
			}

			var cfg testConfig
			opts, err := Load(newFlagSet(&cfg), args, &cfg)
			require.NoError(t, err)

			assert.Equal(t, tc.want.brokers, []string(cfg.Kafka.Brokers), "kafka.brokers")
			assert.Equal(t, tc.want.clientID, cfg.Kafka.ClientID, "kafka.client-id")
			assert.Equal(t, tc.want.maxBytes, cfg.Kafka.MaxBytes, "kafka.max-bytes")
			assert.Equal(t, tc.want.port, cfg.Port, "port")
			assert.Equal(t, tc.want.debug, cfg.Debug, "debug")
			assert.Equal(t, path, opts.File)
			assert.False(t, opts.Verify)
		})
	}
}

func TestLoadLayersPerField(t *testing.T) {
	clearEnv(t)
	// Each layer sets a different field: every field keeps the value of the
	// highest layer that set it, and fields no layer set keep their defaults.
	path := writeFile(t, "kafka:\n  client_id: from-file\n  brokers: file:9092\nport: 1001\n")
	t.Setenv("FLEETGATE_PORT", "1002")
	t.Setenv("FLEETGATE_KAFKA_BROKERS", "env:9092")

	var cfg testConfig
	_, err := Load(newFlagSet(&cfg), []string{"-config.file", path, "-kafka.brokers", "flag:9092"}, &cfg)
	require.NoError(t, err)

	assert.Equal(t, "from-file", cfg.Kafka.ClientID)
	assert.Equal(t, 1002, cfg.Port)
	assert.Equal(t, []string{"flag:9092"}, []string(cfg.Kafka.Brokers))
	assert.Equal(t, ByteSize(1<<20), cfg.Kafka.MaxBytes)
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    *string // written to a temporary file and passed with -config.file
		env     map[string]string
		args    []string
		wantIs  error
		wantAll []string // substrings the error must contain
	}{
		{
			name:    "an invalid integer in the environment names the variable and the flag",
			env:     map[string]string{"FLEETGATE_PORT": "many"},
			wantAll: []string{"FLEETGATE_PORT", "-port", `"many"`},
		},
		{
			name:    "an invalid size in the environment names the variable and the flag",
			env:     map[string]string{"FLEETGATE_KAFKA_MAX_BYTES": "lots"},
			wantAll: []string{"FLEETGATE_KAFKA_MAX_BYTES", "-kafka.max-bytes", `"lots"`},
		},
		{
			name:    "an invalid boolean in the environment names the variable and the flag",
			env:     map[string]string{"FLEETGATE_CONFIG_VERIFY": "maybe"},
			wantAll: []string{"FLEETGATE_CONFIG_VERIFY", "-config.verify"},
		},
		{
			name:    "an unknown key in the file is an error naming the key",
			file:    ptr("kafka:\n  brokerz: [a]\n"),
			wantAll: []string{"config.file", "brokerz"},
		},
		{
			name:    "an unknown top-level key in the file is an error naming the key",
			file:    ptr("prot: 1\n"),
			wantAll: []string{"prot"},
		},
		{
			name:    "a value of the wrong type in the file is an error",
			file:    ptr("port: many\n"),
			wantAll: []string{"config.file", "many"},
		},
		{
			name:    "an invalid size in the file is an error",
			file:    ptr("kafka:\n  max_bytes: -1KiB\n"),
			wantAll: []string{"config.file", "is not a size"},
		},
		{
			name:    "a file that is not YAML is an error",
			file:    ptr("kafka: [\n"),
			wantAll: []string{"config.file"},
		},
		{
			name:    "a missing file is an error naming config.file",
			args:    []string{"-config.file", filepath.Join(os.TempDir(), "fleetgate-does-not-exist", "config.yaml")},
			wantIs:  os.ErrNotExist,
			wantAll: []string{"config.file", "fleetgate-does-not-exist"},
		},
		{
			name:    "a missing file named in the environment is an error naming config.file",
			env:     map[string]string{"FLEETGATE_CONFIG_FILE": filepath.Join(os.TempDir(), "fleetgate-does-not-exist", "config.yaml")},
			wantIs:  os.ErrNotExist,
			wantAll: []string{"config.file"},
		},
		{
			name:    "a Validate error from a flag is returned",
			args:    []string{"-port=-1"},
			wantIs:  errBadPort,
			wantAll: []string{"invalid configuration", errBadPort.Error()},
		},
		{
			name:   "a Validate error from the environment is returned",
			env:    map[string]string{"FLEETGATE_PORT": "-1"},
			wantIs: errBadPort,
		},
		{
			name:   "a Validate error from the file is returned",
			file:   ptr("port: -1\n"),
			wantIs: errBadPort,
		},
		{
			name:    "a positional argument is rejected",
			args:    []string{"serve"},
			wantAll: []string{"unexpected argument", `"serve"`},
		},
		{
			name:    "a positional argument after flags is rejected",
			args:    []string{"-port", "1", "extra"},
			wantAll: []string{"unexpected argument", `"extra"`},
		},
		{
			name:    "an unknown flag is rejected",
			args:    []string{"-no-such-flag"},
			wantAll: []string{"no-such-flag"},
		},
		{
			name:    "an invalid flag value is rejected",
			args:    []string{"-kafka.max-bytes=12XB"},
			wantAll: []string{"kafka.max-bytes"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.file != nil {
				args = append([]string{"-config.file", writeFile(t, *tc.file)}, args...)
			}
			var cfg testConfig
			_, err := Load(newFlagSet(&cfg), args, &cfg)
			require.Error(t, err)
			if tc.wantIs != nil {
				assert.ErrorIs(t, err, tc.wantIs)
			}
			for _, s := range tc.wantAll {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestLoadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		wantPort      int
		wantBrokers   []string
	}{
		{name: "an empty file keeps the defaults", content: "", wantPort: 1883, wantBrokers: []string{"localhost:9092"}},
		{name: "a file with only comments keeps the defaults", content: "# nothing here\n", wantPort: 1883, wantBrokers: []string{"localhost:9092"}},
		{name: "a file with a document marker only keeps the defaults", content: "---\n", wantPort: 1883, wantBrokers: []string{"localhost:9092"}},
		{name: "brokers may be a YAML sequence", content: "kafka:\n  brokers:\n    - a:1\n    - b:2\n", wantPort: 1883, wantBrokers: []string{"a:1", "b:2"}},
		{name: "brokers may be a comma-separated string", content: "kafka:\n  brokers: a:1, b:2 ,,c:3\n", wantPort: 1883, wantBrokers: []string{"a:1", "b:2", "c:3"}},
		{name: "brokers may be a flow sequence", content: "kafka: {brokers: [a:1, b:2]}\nport: 8883\n", wantPort: 8883, wantBrokers: []string{"a:1", "b:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			var cfg testConfig
			opts, err := Load(newFlagSet(&cfg), []string{"-config.file=" + writeFile(t, tc.content)}, &cfg)
			require.NoError(t, err)
			assert.NotEmpty(t, opts.File)
			assert.Equal(t, tc.wantPort, cfg.Port)
			assert.Equal(t, tc.wantBrokers, []string(cfg.Kafka.Brokers))
			assert.Equal(t, "fleetgate", cfg.Kafka.ClientID)
		})
	}
}

func TestLoadVerify(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{name: "verify is off by default", want: false},
		{name: "-config.verify sets Verify", args: []string{"-config.verify"}, want: true},
		{name: "FLEETGATE_CONFIG_VERIFY sets Verify", env: map[string]string{"FLEETGATE_CONFIG_VERIFY": "true"}, want: true},
		{name: "an explicit -config.verify=false wins over the environment", args: []string{"-config.verify=false"}, env: map[string]string{"FLEETGATE_CONFIG_VERIFY": "true"}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var cfg testConfig
			opts, err := Load(newFlagSet(&cfg), tc.args, &cfg)
			require.NoError(t, err)
			assert.Equal(t, tc.want, opts.Verify)
		})
	}
}

func TestLoadWithoutValidator(t *testing.T) {
	clearEnv(t)
	var target struct {
		Name string `yaml:"name"`
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&target.Name, "name", "default", "A name.")
	t.Setenv("FLEETGATE_NAME", "from-env")

	_, err := Load(fs, nil, &target)
	require.NoError(t, err)
	assert.Equal(t, "from-env", target.Name)
}

func TestUsage(t *testing.T) {
	clearEnv(t)
	var cfg testConfig
	fs := newFlagSet(&cfg)
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.Usage = Usage(fs, "frontend", "The MQTT frontend.")

	_, err := Load(fs, []string{"-h"}, &cfg)
	require.ErrorIs(t, err, flag.ErrHelp)

	text := out.String()
	assert.Contains(t, text, "Usage of frontend:")
	assert.Contains(t, text, "The MQTT frontend.")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	require.Contains(t, names, FileFlag)
	require.Contains(t, names, VerifyFlag)
	for _, name := range names {
		assert.Contains(t, text, "  -"+name+" ", "flag %s is listed", name)
		assert.Contains(t, text, "env "+EnvName(name)+"\n", "flag %s lists its variable", name)
	}
	assert.Contains(t, text, `(default "fleetgate")`)
	assert.Contains(t, text, `(default "1MiB")`)
	assert.Contains(t, text, `(default "localhost:9092")`)
	assert.NotContains(t, text, `(default "false")`, "a false boolean default is not shown")
}
