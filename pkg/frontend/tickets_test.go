package frontend_test

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// writeTicketKeys writes n fresh session ticket keys to path, as an
// operator would (openssl rand -hex 32, one per line).
func writeTicketKeys(t *testing.T, path string, n int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# fleetgate TLS session ticket keys: the first encrypts, all decrypt\n")
	for range n {
		k := make([]byte, 32)
		_, err := rand.Read(k)
		require.NoError(t, err)
		b.WriteString(hex.EncodeToString(k) + "\n")
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
}

// resumes dials addr over TLS with cache, runs an MQTT CONNECT (the
// server's session ticket arrives before the CONNACK and lands in cache)
// and reports whether the handshake resumed an earlier session.
func resumes(t *testing.T, addr string, p *pki, cache tls.ClientSessionCache, clientID string) bool {
	t.Helper()
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1", ClientSessionCache: cache})
	require.NoError(t, err)
	c := testkit.WrapRaw(t, nc, 4)
	c.Connect(clientID, true)
	resumed := nc.ConnectionState().DidResume
	require.NoError(t, nc.Close())
	return resumed
}

// TestFrontendsWithTheSameTicketKeysResumeEachOthersTLSSessions: a device
// whose TLS session began on one frontend resumes it on another that holds
// the same mqtt.tls-session-ticket-keys-file, and not on a frontend with
// keys of its own (the default). A key file changed on disk is picked up at
// the default authz.reload-interval; a broken one keeps the keys in force
// and is counted as a failed reload.
func TestFrontendsWithTheSameTicketKeysResumeEachOthersTLSSessions(t *testing.T) {
	p := newPKI(t)
	k := testkit.StartKafka(t)
	keys := filepath.Join(t.TempDir(), "ticket-keys")
	writeTicketKeys(t, keys, 2)
	shared := func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile, c.MQTT.TLSSessionTicketKeysFile = p.certFile, p.keyFile, keys
	}
	a, b := startNode(t, k.Addr(), shared), startNode(t, k.Addr(), shared)
	own := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile = p.certFile, p.keyFile })
	for _, n := range []*node{a, b, own} {
		n.waitReady()
	}
	addrA, addrB, addrOwn := a.srv.Addr(frontend.ListenerTLS), b.srv.Addr(frontend.ListenerTLS), own.srv.Addr(frontend.ListenerTLS)

	cache := tls.NewLRUClientSessionCache(1)
	require.False(t, resumes(t, addrA, p, cache, "ticket-device"), "a first connection has nothing to resume")
	assert.True(t, resumes(t, addrB, p, cache, "ticket-device"), "the other frontend holds the keys of the ticket")

	alone := tls.NewLRUClientSessionCache(1)
	require.False(t, resumes(t, addrA, p, alone, "ticket-device-2"))
	assert.False(t, resumes(t, addrOwn, p, alone, "ticket-device-2"), "a frontend with keys of its own cannot read another's ticket")

	// A broken file keeps the keys in force.
	require.NoError(t, os.WriteFile(keys, []byte("not a key\n"), 0o600))
	failed := `fleetgate_frontend_auth_reloads_total{outcome="failed",what="tls_ticket_keys"}`
	require.Eventually(t, func() bool { return strings.Contains(b.metrics(), failed) }, 20*time.Second, 100*time.Millisecond,
		"the broken key file was never reported")
	again := tls.NewLRUClientSessionCache(1)
	require.False(t, resumes(t, addrA, p, again, "ticket-device-3"))
	assert.True(t, resumes(t, addrB, p, again, "ticket-device-3"), "the keys before the broken file stay in force")

	// New keys on b only: tickets a issues with the old ones no longer
	// resume there.
	writeTicketKeys(t, keys+".b", 1)
	require.NoError(t, os.Rename(keys+".b", keys))
	ok := `fleetgate_frontend_auth_reloads_total{outcome="ok",what="tls_ticket_keys"}`
	require.Eventually(t, func() bool { return strings.Contains(b.metrics(), ok) && strings.Contains(a.metrics(), ok) },
		20*time.Second, 100*time.Millisecond, "the new key file was never loaded")
	rotated := tls.NewLRUClientSessionCache(1)
	require.False(t, resumes(t, addrOwn, p, rotated, "ticket-device-4"))
	assert.False(t, resumes(t, addrB, p, rotated, "ticket-device-4"), "a ticket of other keys does not resume")
	// b's full handshake issued a ticket of the new keys, which a holds.
	assert.True(t, resumes(t, addrA, p, rotated, "ticket-device-4"), "both hold the new keys")
}
