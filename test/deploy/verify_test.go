package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/pkg/auth"
)

// envPrefix starts every environment variable a fleetgate binary reads.
const envPrefix = "FLEETGATE_"

// verifyTimeout bounds one -config.verify run. A binary that ignores the flag
// starts serving instead of exiting; the timeout turns that into a failure
// rather than a hung test.
const verifyTimeout = 30 * time.Second

// drainSlack is what the grace period must leave on top of shutdown.timeout:
// after the drain deadline the frontend still flushes the producer and closes
// connections (about 3s at most), and the process has to exit.
const drainSlack = 5 * time.Second

// verifiedMarker is the first line -config.verify prints on success. Checking
// for it proves the configuration was verified, not that the process merely
// exited 0 (as it does for -help).
const verifiedMarker = "# configuration is valid"

// invocation is one fleetgate process as a deploy file starts it.
type invocation struct {
	// Source names the service or container, for messages.
	Source string
	// Binary is the command the container runs: ./cmd/<Binary>.
	Binary string
	// Args are the arguments after the binary.
	Args []string
	// Env is the container's environment, resolved.
	Env map[string]string
	// Inherited are variables the container takes from somewhere this test
	// cannot see (compose's `- NAME` from the host shell); their names are
	// still checked.
	Inherited []string
	// Grace is how long the orchestrator lets the process run after SIGTERM
	// before killing it; zero skips the check.
	Grace time.Duration
	// Probes are the HTTP health checks aimed at the process.
	Probes []probe
	// NamedPorts are the container's ports by name (Kubernetes).
	NamedPorts map[string]int
	// Exposed are the container's ports that a Service makes reachable
	// from outside the cluster (Kubernetes).
	Exposed []exposure
}

// exposure is a container port that a Service of type LoadBalancer or
// NodePort, or one with external IPs, opens to the world.
type exposure struct {
	Service string // the Service and its port, for messages
	Port    int    // the container port
}

// probe is a Kubernetes httpGet probe with its port resolved to a number.
type probe struct {
	Kind string // readinessProbe, livenessProbe, startupProbe
	Path string
	Port int
}

// verifier builds the fleetgate binaries on demand and checks invocations
// against them. It is safe for concurrent use.
type verifier struct {
	root   string // repository root (directory of go.mod)
	binDir string

	mu   sync.Mutex
	bins map[string]*builtBinary
}

// builtBinary is one binary of ./cmd with the settings its -help lists.
type builtBinary struct {
	once  sync.Once
	path  string
	known map[string]bool // FLEETGATE_* names
	err   error
}

func newVerifier(root, binDir string) *verifier {
	return &verifier{root: root, binDir: binDir, bins: map[string]*builtBinary{}}
}

// repoRoot finds the module root through `go env GOMOD`.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
}

// binary builds ./cmd/name once and reads the settings it knows from -help.
func (v *verifier) binary(ctx context.Context, name string) (*builtBinary, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("%q is not a binary of ./cmd", name)
	}
	v.mu.Lock()
	b, ok := v.bins[name]
	if !ok {
		b = &builtBinary{}
		v.bins[name] = b
	}
	v.mu.Unlock()
	b.once.Do(func() { b.path, b.known, b.err = v.build(ctx, name) })
	return b, b.err
}

var helpEnvLine = regexp.MustCompile(`(?m)^\s+env (` + envPrefix + `[A-Z0-9_]+)\s*$`)

func (v *verifier) build(ctx context.Context, name string) (string, map[string]bool, error) {
	pkg := "./cmd/" + name
	goFiles, _ := filepath.Glob(filepath.Join(v.root, "cmd", name, "*.go"))
	if len(goFiles) == 0 {
		return "", nil, fmt.Errorf("the image runs %q but %s has no Go files in %s", name, pkg, v.root)
	}
	out := filepath.Join(v.binDir, name)
	build := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	build.Dir = v.root
	if msg, err := build.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}

	// The usage text goes to stderr; collect both streams in case that changes.
	var help bytes.Buffer
	cmd := exec.CommandContext(ctx, out, "-help")
	cmd.Stdout, cmd.Stderr = &help, &help
	cmd.Env = cleanEnv(v.binDir, nil)
	if err := cmd.Run(); err != nil {
		return "", nil, fmt.Errorf("%s -help: %w\n%s", name, err, help.Bytes())
	}
	known := map[string]bool{}
	for _, m := range helpEnvLine.FindAllStringSubmatch(help.String(), -1) {
		known[m[1]] = true
	}
	// Every binary has -config.verify; without it in the list the help format
	// changed and the name check below would reject everything (or nothing).
	if !known[envPrefix+"CONFIG_VERIFY"] {
		return "", nil, fmt.Errorf("%s -help lists no line \"env %sCONFIG_VERIFY\"; cannot learn its settings:\n%s", name, envPrefix, help.Bytes())
	}
	return out, known, nil
}

// cleanEnv is the environment a verify run gets: PATH, HOME and env only.
func cleanEnv(home string, env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	for _, k := range sortedKeys(env) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// check runs every test an invocation must pass: known setting names,
// -config.verify exiting 0, a grace period covering the drain and probes on
// the operations port. It returns all problems found, joined.
func (v *verifier) check(ctx context.Context, inv invocation) error {
	bin, err := v.binary(ctx, inv.Binary)
	if err != nil {
		return fmt.Errorf("%s: %w", inv.Source, err)
	}
	var errs []error
	names := slices.Concat(sortedKeys(inv.Env), inv.Inherited)
	for _, name := range names {
		if strings.HasPrefix(name, envPrefix) && !bin.known[name] {
			errs = append(errs, fmt.Errorf("%s: %s is not a setting of %s%s", inv.Source, name, inv.Binary, suggest(name, bin.known)))
		}
	}

	cfg, err := v.verify(ctx, bin.path, inv)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if inv.Grace > 0 {
		if timeout, ok, err := durationAt(cfg, "shutdown", "timeout"); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", inv.Source, err))
		} else if ok && inv.Grace < timeout+drainSlack {
			errs = append(errs, fmt.Errorf("%s: the process gets %s after SIGTERM but shutdown.timeout is %s; give it at least %s so the drain finishes before SIGKILL",
				inv.Source, inv.Grace, timeout, timeout+drainSlack))
		}
	}
	if len(inv.Probes) > 0 {
		errs = append(errs, checkProbes(inv, cfg)...)
	}
	if len(inv.Exposed) > 0 {
		errs = append(errs, checkExposure(inv, cfg)...)
	}
	return errors.Join(errs...)
}

// verify runs the binary with exactly the invocation's arguments and
// environment plus -config.verify, and returns the configuration it printed.
func (v *verifier) verify(ctx context.Context, binPath string, inv invocation) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	work, err := os.MkdirTemp(v.binDir, "run-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binPath, append(slices.Clone(inv.Args), "-config.verify")...)
	cmd.Dir = work
	cmd.Env = cleanEnv(work, inv.Env)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	shown := strings.Join(append([]string{inv.Binary}, inv.Args...), " ") + " -config.verify"
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("still running after %s (does it honour -config.verify?)", verifyTimeout)
		}
		// A flag error is followed by the whole usage text; the error is enough.
		msg, _, _ := strings.Cut(stderr.String(), "Usage of ")
		return nil, fmt.Errorf("%s: `%s` failed: %w\n%s", inv.Source, shown, err, strings.TrimSpace(msg))
	}
	if !strings.HasPrefix(stdout.String(), verifiedMarker) {
		return nil, fmt.Errorf("%s: `%s` exited 0 without verifying the configuration (no %q); does the command run something else, like -help?\n%s",
			inv.Source, shown, verifiedMarker, firstLine(stdout.String()+stderr.String()))
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(stdout.Bytes(), &cfg); err != nil {
		return nil, fmt.Errorf("%s: parsing the configuration printed by -config.verify: %w", inv.Source, err)
	}
	if err := loadCredentials(cfg, work); err != nil {
		return nil, fmt.Errorf("%s: %w", inv.Source, err)
	}
	return cfg, nil
}

// loadCredentials reads the password file and the JWT keys of a verified
// configuration with authentication settings (the frontend's) as the
// frontend does when it starts: -config.verify only checks that these files
// exist, so a file the frontend would refuse to start with (a plain
// password where a bcrypt hash belongs, a key that is no PEM) would
// otherwise pass. Relative paths are taken from dir, the verify run's
// working directory.
func loadCredentials(cfg map[string]any, dir string) error {
	section, ok := cfg["auth"]
	if !ok {
		return nil
	}
	text, err := yaml.Marshal(section)
	if err != nil {
		return err
	}
	var ac auth.Config
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&ac); err != nil {
		return fmt.Errorf("reading the auth settings printed by -config.verify: %w", err)
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	ac.PasswordFile, ac.JWT.JWKSFile, ac.JWT.HMACSecretFile = abs(ac.PasswordFile), abs(ac.JWT.JWKSFile), abs(ac.JWT.HMACSecretFile)
	for i, f := range ac.JWT.KeyFiles {
		ac.JWT.KeyFiles[i] = abs(f)
	}
	chain, err := auth.New(ac)
	if err != nil {
		return fmt.Errorf("auth settings printed by -config.verify: %w", err)
	}
	if err := chain.Load(); err != nil {
		return fmt.Errorf("the frontend would not start: loading its credentials: %w", err)
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// checkProbes compares Kubernetes HTTP probes with the operations server the
// verified configuration describes.
func checkProbes(inv invocation, cfg map[string]any) []error {
	addr, ok := stringAt(cfg, "http", "addr")
	if !ok {
		return nil
	}
	var errs []error
	if addr == "" {
		return []error{fmt.Errorf("%s: has HTTP probes but http.addr is empty, so nothing answers them", inv.Source)}
	}
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return []error{fmt.Errorf("%s: http.addr %q: %w", inv.Source, addr, err)}
	}
	port, _ := strconv.Atoi(portText)
	want := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
	for _, p := range inv.Probes {
		if p.Port != port {
			errs = append(errs, fmt.Errorf("%s: %s probes port %d, but the operations server listens on %s", inv.Source, p.Kind, p.Port, addr))
		}
		if w, ok := want[p.Kind]; ok && p.Path != w {
			errs = append(errs, fmt.Errorf("%s: %s probes %s, want %s", inv.Source, p.Kind, p.Path, w))
		}
	}
	return errs
}

// checkExposure holds what a Service opens outside the cluster to the TLS
// listeners: a plain MQTT or WebSocket listener there carries devices'
// passwords and tokens in clear, and the operations server answers anyone
// with metrics (and pprof when it is on). A port on which nothing listens is
// a mistake too.
func checkExposure(inv invocation, cfg map[string]any) []error {
	type listener struct {
		setting, addr string
		tls           bool
	}
	var ls []listener
	if a, _ := stringAt(cfg, "mqtt", "tcp_addr"); a != "" {
		ls = append(ls, listener{"mqtt.tcp-addr", a, false})
	}
	if a, _ := stringAt(cfg, "mqtt", "tls_addr"); a != "" {
		if cert, _ := stringAt(cfg, "mqtt", "tls_cert_file"); cert != "" {
			ls = append(ls, listener{"mqtt.tls-addr", a, true})
		}
	}
	if a, _ := stringAt(cfg, "mqtt", "ws_addr"); a != "" {
		wss, _ := lookup(cfg, "mqtt", "ws_tls").(bool)
		ls = append(ls, listener{"mqtt.ws-addr", a, wss})
	}
	if a, _ := stringAt(cfg, "http", "addr"); a != "" {
		ls = append(ls, listener{"http.addr", a, false})
	}
	var errs []error
	for _, e := range inv.Exposed {
		var found *listener
		for i, l := range ls {
			if _, p, err := net.SplitHostPort(l.addr); err == nil && p == strconv.Itoa(e.Port) {
				found = &ls[i]
				break
			}
		}
		switch {
		case found == nil:
			errs = append(errs, fmt.Errorf("%s: %s opens container port %d outside the cluster, but no listener of the %s is on it", inv.Source, e.Service, e.Port, inv.Binary))
		case found.setting == "http.addr":
			errs = append(errs, fmt.Errorf("%s: %s opens the operations server (http.addr %s: metrics, health, pprof when on) outside the cluster; scrape it from inside through a ClusterIP Service", inv.Source, e.Service, found.addr))
		case !found.tls:
			hint := "serve it as wss (mqtt.ws-tls)"
			if found.setting == "mqtt.tcp-addr" {
				hint = "open mqtt.tls-addr instead and keep plain MQTT on a ClusterIP Service"
			}
			errs = append(errs, fmt.Errorf("%s: %s opens the plain listener %s (%s) outside the cluster, where devices' passwords and tokens would cross the network in clear: %s",
				inv.Source, e.Service, found.setting, found.addr, hint))
		}
	}
	return errs
}

// suggest names the known setting closest to a misspelled one.
func suggest(name string, known map[string]bool) string {
	best, bestDist := "", 4 // further than 3 edits is not a typo
	for _, k := range sortedKeys(known) {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return " (see its -help)"
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// durationAt reads a duration from the verified configuration; ok is false
// when the binary has no such setting.
func durationAt(cfg map[string]any, keys ...string) (time.Duration, bool, error) {
	s, ok := stringAt(cfg, keys...)
	if !ok {
		return 0, false, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false, fmt.Errorf("%s in the verified configuration: %w", strings.Join(keys, "."), err)
	}
	return d, true, nil
}

// stringAt walks nested maps and returns the scalar at the end as a string.
func stringAt(m map[string]any, keys ...string) (string, bool) {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = mm[k]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case nil, map[string]any, []any:
		return "", false
	default:
		return fmt.Sprint(v), true
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
