package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/frontend"
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

// TestHAProxyOutwaitsTheFrontendsIdleTimeout: HAProxy closes a connection
// silent for `timeout client`/`timeout server`. At the frontend's defaults a
// device may stay silent up to mqtt.idle-timeout (an MQTT 5 client told the
// Server Keep Alive of mqtt.max-keepalive pings within 1.5 times it), so
// HAProxy must wait longer, or it cuts off idle devices the frontend keeps.
func TestHAProxyOutwaitsTheFrontendsIdleTimeout(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fleetgate.root, "deploy", "haproxy", "haproxy.cfg"))
	require.NoError(t, err)
	require.Greater(t, frontend.DefaultIdleTimeout, frontend.DefaultMaxKeepAlive*3/2-time.Second)
	found := map[string]time.Duration{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "timeout" && (f[1] == "client" || f[1] == "server") {
			found[f[1]] = haproxyTime(t, f[2])
		}
	}
	for _, which := range []string{"client", "server"} {
		d, ok := found[which]
		require.True(t, ok, "no `timeout %s` in haproxy.cfg", which)
		require.Greater(t, d, frontend.DefaultIdleTimeout,
			"timeout %s %s cuts off devices the frontend keeps for mqtt.idle-timeout %s", which, d, frontend.DefaultIdleTimeout)
	}
}

// haproxyTime parses an HAProxy time: a number with an optional unit (us,
// ms, s, m, h, d; ms when none).
func haproxyTime(t *testing.T, s string) time.Duration {
	t.Helper()
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}}
	unit := time.Millisecond
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, unit = strings.TrimSuffix(s, u.suffix), u.unit
			break
		}
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "HAProxy time %q", s)
	return time.Duration(n) * unit
}
