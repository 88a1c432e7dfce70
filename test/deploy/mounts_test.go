package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// mount is one path a container sees through a volume.
type mount struct {
	// Target is the path inside the container.
	Target string
	// Source is where the mount's real contents are on this machine: a
	// compose bind mount's directory in the repository, or a Kubernetes
	// Secret or ConfigMap of the manifests written out to a temporary
	// directory. Empty when the contents are not in the repository (a
	// named volume, a Secret created with kubectl): the path gets a stand-in.
	Source string
}

// standIns rewrites the paths that settings give inside a container's mounts
// to paths on this machine.
//
// Validate checks that file settings (TLS certificate and key, client CA,
// password file) exist, and the frontend parses its rules file. In a
// container those files come from mounts, so a value under a mount target is
// rewritten:
//   - under a mount whose contents the repository holds (Source set), to the
//     same relative path under Source, so the binary reads the very file the
//     container would, and a missing or broken file fails as it would there;
//   - under any other mount, to a file of the same relative path under dir,
//     created empty: the check proves the setting names a mounted path, which
//     is what the container needs; the file's contents are the operator's
//     business. A value equal to such a mount target gets a directory.
//
// Paths outside every mount are passed unchanged, so a setting that names a
// file nobody mounts still fails, as it would in the container.
type standIns struct {
	dir    string
	mounts []mount // longest target first
}

func newStandIns(dir string, mounts []mount) *standIns {
	m := make([]mount, 0, len(mounts))
	for _, mt := range mounts {
		if mt.Target = filepath.Clean(mt.Target); filepath.IsAbs(mt.Target) && mt.Target != "/" {
			m = append(m, mt)
		}
	}
	sort.SliceStable(m, func(i, j int) bool { return len(m[i].Target) > len(m[j].Target) })
	return &standIns{dir: dir, mounts: m}
}

// value rewrites one setting value.
func (s *standIns) value(v string) (string, error) {
	for _, m := range s.mounts {
		if v != m.Target && !strings.HasPrefix(v, m.Target+"/") {
			continue
		}
		if m.Source != "" {
			return filepath.Join(m.Source, strings.TrimPrefix(v, m.Target)), nil
		}
		if v == m.Target {
			local := filepath.Join(s.dir, m.Target)
			return local, os.MkdirAll(local, 0o755)
		}
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

// writeVolume writes files (relative path → contents) into a new directory
// under dir and returns it: the contents of a Secret or ConfigMap volume as
// the kubelet lays them out.
func writeVolume(dir, name string, files map[string]string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	root, err := os.MkdirTemp(dir, "volume-"+name+"-")
	if err != nil {
		return "", err
	}
	for _, p := range sortedKeys(files) {
		if !filepath.IsLocal(p) {
			return "", fmt.Errorf("volume %s: path %q must be relative and stay inside the volume", name, p)
		}
		local := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(local, []byte(files[p]), 0o644); err != nil {
			return "", err
		}
	}
	return root, nil
}
