// Package imports holds the import rules of the repository with a test, not
// with memory: what each contract package may import, what each binary may
// link, and that test helpers stay out of everything that ships.
package imports

import (
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/fleetgate/fleetgate"

// contracts define bytes that cross a process boundary (Kafka records,
// Redis entries, notices). Each may import only other contracts, so that
// both sides of a boundary import the contract and never each other.
var contracts = []string{"pkg/kafkarecord", "pkg/events", "pkg/handoff"}

// binaries and what each must not link: a frontend carries no dispatcher or
// archiver, a dispatcher no frontend, an archiver neither; and nothing
// that ships links the testing package or the test helpers.
var binaries = map[string][]string{
	"cmd/frontend":        {"pkg/dispatch", "pkg/archiver", "pkg/archive"},
	"cmd/dispatcher":      append([]string{"pkg/frontend", "pkg/archiver", "pkg/archive"}, frontendRooms...),
	"cmd/archiver":        append([]string{"pkg/frontend", "pkg/dispatch"}, frontendRooms...),
	"cmd/fleetgate-bench": append([]string{"pkg/frontend", "pkg/dispatch"}, frontendRooms...),
	"cmd/fleetgate-dev":   {},
}

// frontendRooms are the frontend's rooms for client packets: the ingest
// path (PUBLISH to Kafka) and the session layer, split by concern.
var frontendRooms = []string{"pkg/ingest", "pkg/sessions", "pkg/subscribe", "pkg/delivery", "pkg/exactlyonce"}

// apart are pairs of packages that must not import each other (the first
// must not link the second): the frontend's rooms meet only in
// pkg/frontend, except that pkg/sessions, the session hook, hands packets
// to subscribe, delivery and exactlyonce; and the dispatcher's router
// shares only contracts with any of them.
var apart = func() [][2]string {
	var pairs [][2]string
	for _, a := range frontendRooms {
		for _, b := range frontendRooms {
			if a != b && !(a == "pkg/sessions" && b != "pkg/ingest") {
				pairs = append(pairs, [2]string{a, b})
			}
		}
		pairs = append(pairs, [2]string{a, "pkg/dispatch"}, [2]string{"pkg/dispatch", a})
	}
	return pairs
}()

// The benchmark tool's rooms (pkg/bench/...). benchMayLink lists every
// fleetgate package each of the lower rooms may link: the figures
// (measure) and the fleet generator (access) link nothing of fleetgate,
// the load generator only the figures
// and the MQTT framing, the side-by-side runner only the load generator and
// what it links, the tests' broker only the TLS benchmarks' certificates
// (which link nothing). So none of them reaches the
// report, the archive benchmark or the command line above it.
var benchMayLink = map[string][]string{
	"pkg/bench/measure":            {},
	"pkg/bench/load":               {"pkg/bench/measure", "pkg/mqttwire"},
	"pkg/bench/compare":            {"pkg/bench/load", "pkg/bench/measure", "pkg/mqttwire"},
	"pkg/bench/internal/tlsfiles":  {},
	"pkg/bench/internal/benchtest": {"pkg/bench/internal/tlsfiles"},
	// The fleet's files (identities, rules, keys, tokens, passwords) are
	// written with nothing of fleetgate: the rules file is YAML, checked
	// by pkg/acl's own tests, not by linking it into the generator.
	"pkg/bench/access": {},
}

// benchMustNotLink: the archive benchmark speaks no MQTT and knows neither
// the load generator nor the runner; the bench binary does not carry the
// broker its tests start.
var benchMustNotLink = map[string][]string{
	"pkg/bench/archivebench": {"pkg/bench/load", "pkg/bench/compare", "pkg/mqttwire"},
	"cmd/fleetgate-bench":    {"pkg/bench/internal/benchtest"},
}

// testOnly are the packages no shipped code may link.
var testOnly = []string{"testing", module + "/internal/testkit", module + "/internal/clustertest", "github.com/stretchr/testify/require"}

// deps lists what pkg links (go list -deps), without test files.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../"+pkg).CombinedOutput()
	require.NoError(t, err, "go list -deps %s: %s", pkg, out)
	return strings.Fields(string(out))
}

// ours returns the packages of this module in list, relative to it.
func ours(list []string) []string {
	var out []string
	for _, p := range list {
		if rel, ok := strings.CutPrefix(p, module+"/"); ok {
			out = append(out, rel)
		}
	}
	return out
}

func TestContractsImportOnlyOtherContracts(t *testing.T) {
	for _, c := range contracts {
		for _, d := range ours(deps(t, c)) {
			if d != c && !slices.Contains(contracts, d) {
				t.Errorf("%s imports %s: a contract may import only other contracts (%v)", c, d, contracts)
			}
		}
	}
}

func TestEachBinaryLinksOnlyItsOwnRooms(t *testing.T) {
	for bin, forbidden := range binaries {
		linked := deps(t, bin)
		for _, f := range forbidden {
			if slices.Contains(linked, module+"/"+f) {
				t.Errorf("%s links %s", bin, f)
			}
		}
		for _, f := range testOnly {
			if slices.Contains(linked, f) {
				t.Errorf("%s links %s, which only tests may", bin, f)
			}
		}
	}
}

func TestPackagesKeptApartDoNotImportEachOther(t *testing.T) {
	for _, pair := range apart {
		if slices.Contains(deps(t, pair[0]), module+"/"+pair[1]) {
			t.Errorf("%s links %s", pair[0], pair[1])
		}
	}
}

func TestNoPackageUnderPkgImportsTestHelpers(t *testing.T) {
	out, err := exec.Command("go", "list", "../../pkg/...").CombinedOutput()
	require.NoError(t, err, "%s", out)
	pkgs := strings.Fields(string(out))
	require.NotEmpty(t, pkgs)
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p, module+"/")
		for _, d := range deps(t, rel) {
			if slices.Contains(testOnly, d) {
				t.Errorf("%s links %s, which only tests may", rel, path.Base(d))
			}
		}
	}
}

// TestEachDocGoNamesWhatItsPackageImports keeps the import paragraph of
// every doc.go true: it names exactly the fleetgate packages the package
// imports.
func TestEachDocGoNamesWhatItsPackageImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}|{{join .Imports \" \"}}", "../../pkg/...", "../../internal/...").CombinedOutput()
	require.NoError(t, err, "%s", out)
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dir, imports, _ := strings.Cut(line, "|")
		doc, err := os.ReadFile(filepath.Join(dir, "doc.go"))
		if errors.Is(err, os.ErrNotExist) {
			if strings.Contains(dir, "/pkg/") {
				t.Errorf("%s has no doc.go", dir)
			}
			continue
		}
		require.NoError(t, err)
		text := strings.Join(strings.Fields(strings.ReplaceAll(string(doc), "//", "")), " ")
		var named []string
		if _, list, ok := strings.Cut(text, "Of fleetgate it imports "); ok {
			list, _, _ = strings.Cut(list, ". ")
			for _, p := range strings.Split(list, ",") {
				named = append(named, strings.TrimSpace(p))
			}
		} else if !strings.Contains(text, "It imports no package of fleetgate.") {
			t.Errorf("%s/doc.go does not say what the package imports", dir)
			continue
		}
		actual := ours(strings.Fields(imports))
		slices.Sort(named)
		slices.Sort(actual)
		if !slices.Equal(named, actual) {
			t.Errorf("%s/doc.go names %v, the package imports %v", dir, named, actual)
		}
		checked++
	}
	require.Positive(t, checked)
}

func TestBenchRoomsLinkOnlyTheRoomsBelowThem(t *testing.T) {
	for pkg, allowed := range benchMayLink {
		for _, d := range ours(deps(t, pkg)) {
			if d != pkg && !slices.Contains(allowed, d) {
				t.Errorf("%s links %s: it may link only %v", pkg, d, allowed)
			}
		}
	}
	for pkg, forbidden := range benchMustNotLink {
		linked := deps(t, pkg)
		for _, f := range forbidden {
			if slices.Contains(linked, module+"/"+f) {
				t.Errorf("%s links %s", pkg, f)
			}
		}
	}
}
