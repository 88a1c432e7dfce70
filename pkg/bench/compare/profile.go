package compare

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// fetchProfiles downloads a CPU profile of seconds from each of t's pprof
// servers at once, into <name>.cpu.pprof for the first and
// <name>.<n>.cpu.pprof for the n-th after it, and returns the paths written
// and the errors.
func fetchProfiles(ctx context.Context, t Target, dir string, seconds int, extra time.Duration) ([]string, []error) {
	addrs := t.pprofAddrs()
	paths := make([]string, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		file := t.Name + ".cpu.pprof"
		if i > 0 {
			file = fmt.Sprintf("%s.%d.cpu.pprof", t.Name, i+1)
		}
		wg.Go(func() {
			paths[i], errs[i] = fetchProfile(ctx, addr, filepath.Join(dir, file), seconds, extra)
		})
	}
	wg.Wait()
	var written []string
	var failed []error
	for i := range addrs {
		if errs[i] != nil {
			failed = append(failed, errs[i])
		} else {
			written = append(written, paths[i])
		}
	}
	return written, failed
}

// fetchProfile downloads a CPU profile of seconds from the pprof server at
// base (host:port or a URL) into path.
func fetchProfile(ctx context.Context, base, path string, seconds int, extra time.Duration) (string, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(base, "/"), max(seconds, 1))
	if extra == 0 {
		extra = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+extra)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("profile request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("fetching %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("profile dir: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("writing profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("writing profile %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("writing profile %s: %w", path, err)
	}
	return path, nil
}
