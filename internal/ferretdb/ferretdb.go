package ferretdb

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Version is the FerretDB release the tests and the benchmark tool run as their
// MongoDB-wire server (see ../shared/TESTING.md: it is built from the Go
// module proxy, as `go install` cannot build it).
const Version = "v1.24.0"

// Binary returns the path of a ferretdb binary of Version,
// building it first when the user cache holds none: it downloads the module,
// copies it to a writable place, writes the version file its build needs and
// runs `go build ./cmd/ferretdb` (about a minute on a fresh machine). The
// binary is renamed into place when complete, so concurrent callers (test
// packages run in parallel) at worst build it twice, never use half of one.
// .ci/run calls it once before the tests, through `go run
// ./internal/cmd/ferretdb-build`.
func Binary() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locating the user cache: %w", err)
	}
	dir := filepath.Join(cache, "fleetgate", "ferretdb-"+Version)
	bin := filepath.Join(dir, "ferretdb")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/FerretDB/FerretDB@"+Version).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download github.com/FerretDB/FerretDB@%s: %w", Version, commandError(err))
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download github.com/FerretDB/FerretDB@%s: no module directory (%s %v)", Version, mod.Error, err)
	}
	src, err := os.MkdirTemp(dir, "src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	// The module cache is read-only: copy it, make it writable, and write
	// the version file the build embeds.
	if out, err := exec.Command("cp", "-R", mod.Dir+"/.", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copying %s: %v: %s", mod.Dir, err, out)
	}
	if out, err := exec.Command("chmod", "-R", "u+w", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("chmod %s: %v: %s", src, err, out)
	}
	if err := os.WriteFile(filepath.Join(src, "build", "version", "version.txt"), []byte(Version), 0o644); err != nil {
		return "", err
	}
	tmp := filepath.Join(src, "ferretdb.bin")
	build := exec.Command("go", "build", "-o", tmp, "./cmd/ferretdb")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ferretdb %s: %v\n%s", Version, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

func commandError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}
