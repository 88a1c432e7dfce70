package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// standIns replaces paths inside a container's mounts with local stand-ins.
//
// Validate checks that file settings (TLS certificate and key, client CA,
// password file) exist. In a container those files come from mounts (a
// Kubernetes Secret, a compose bind mount) that do not exist on the test
// machine, so a value under a mount target is rewritten to a file of the same
// relative path under dir, created empty: the check proves the setting names
// a mounted path, which is what the container needs; the file's contents are
// the mount's business. A value equal to a mount target gets a directory.
// Paths outside every mount are passed unchanged, so a setting that names a
// file nobody mounts still fails, as it would in the container.
type standIns struct {
	dir    string
	mounts []string // container paths, longest first
}

func newStandIns(dir string, mounts []string) *standIns {
	m := make([]string, 0, len(mounts))
	for _, p := range mounts {
		if p = filepath.Clean(p); filepath.IsAbs(p) && p != "/" {
			m = append(m, p)
		}
	}
	sort.Slice(m, func(i, j int) bool { return len(m[i]) > len(m[j]) })
	return &standIns{dir: dir, mounts: m}
}

// value rewrites one setting value.
func (s *standIns) value(v string) (string, error) {
	for _, m := range s.mounts {
		switch {
		case v == m:
			local := filepath.Join(s.dir, m)
			return local, os.MkdirAll(local, 0o755)
		case strings.HasPrefix(v, m+"/"):
			local := filepath.Join(s.dir, filepath.Clean(v))
			if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
				return "", err
			}
			f, err := os.OpenFile(local, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return "", fmt.Errorf("stand-in for mounted %s: %w", v, err)
			}
			return local, f.Close()
		}
	}
	return v, nil
}

// arg rewrites the value of one command-line argument: the part after "="
// in -flag=value, or the whole argument (the value of a preceding -flag).
func (s *standIns) arg(a string) (string, error) {
	if strings.HasPrefix(a, "-") {
		if name, val, ok := strings.Cut(a, "="); ok {
			v, err := s.value(val)
			return name + "=" + v, err
		}
		return a, nil
	}
	return s.value(a)
}

// apply rewrites every argument and environment value of inv in place.
func (s *standIns) apply(inv *invocation) error {
	for i, a := range inv.Args {
		v, err := s.arg(a)
		if err != nil {
			return err
		}
		inv.Args[i] = v
	}
	for k, val := range inv.Env {
		v, err := s.value(val)
		if err != nil {
			return err
		}
		inv.Env[k] = v
	}
	return nil
}
