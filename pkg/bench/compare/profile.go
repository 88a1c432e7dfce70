package compare

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fetchProfile downloads a CPU profile of seconds from t's pprof server.
func fetchProfile(ctx context.Context, t Target, dir string, seconds int, extra time.Duration) (string, error) {
	base := t.Pprof
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
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("profile dir: %w", err)
	}
	path := filepath.Join(dir, t.Name+".cpu.pprof")
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
