package deploy

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHAProxyConfigIsValid asks HAProxy itself to check deploy/haproxy/haproxy.cfg.
// The servers' names need not resolve (init-addr none), so it runs anywhere.
func TestHAProxyConfigIsValid(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (apt-get install -y haproxy)")
	}
	cfg := filepath.Join(fleetgate.root, "deploy", "haproxy", "haproxy.cfg")
	out, err := exec.CommandContext(t.Context(), haproxy, "-c", "-f", cfg).CombinedOutput()
	require.NoError(t, err, "haproxy -c -f %s:\n%s", cfg, out)
}
