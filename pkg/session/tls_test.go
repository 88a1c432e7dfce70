package session

import (
	"context"
	"flag"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// tlsRedis starts a redis-server that listens with TLS only, its
// certificate from pki; clientCerts makes it require a client certificate
// signed by pki's CA (tls-auth-clients yes).
func tlsRedis(t *testing.T, pki *testkit.PKI, clientCerts bool) string {
	t.Helper()
	bin := testkit.RequireTool(t, "redis-server", "redis-server")
	addr := testkit.FreeAddr(t)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	auth := "no"
	if clientCerts {
		auth = "yes"
	}
	cmd := exec.Command(bin, "--port", "0", "--tls-port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--tls-cert-file", pki.CertFile, "--tls-key-file", pki.KeyFile,
		"--tls-ca-cert-file", pki.CAFile, "--tls-auth-clients", auth)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "redis-server with TLS did not listen: %s", out)
	return addr
}

// redisFlags parses args into a session configuration, as a binary does.
func redisFlags(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(args))
	return c, c.Validate()
}

// TestRedisOverTLSWithAPrivateCAAndAClientCertificate runs the session
// store's client against redis-server listening with TLS only: with the
// CA of its certificate (redis.tls-ca-file) it answers; with the system
// roots the handshake fails on the unknown authority; a server that
// requires client certificates answers only with redis.tls-cert-file and
// redis.tls-key-file; and settings that cannot work are errors naming the
// flag.
func TestRedisOverTLSWithAPrivateCAAndAClientCertificate(t *testing.T) {
	pki := testkit.NewPKI(t, "fleetgate")
	ping := func(c Config) error {
		rdb := c.Redis.NewClient()
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err()
	}

	addr := tlsRedis(t, pki, false)
	c, err := redisFlags(t, "-redis.addrs", addr, "-redis.tls", "-redis.tls-ca-file", pki.CAFile)
	require.NoError(t, err)
	assert.NoError(t, ping(c), "with the server's CA")
	c, err = redisFlags(t, "-redis.addrs", addr, "-redis.tls")
	require.NoError(t, err)
	assert.ErrorContains(t, ping(c), "certificate signed by unknown authority", "with the system roots")
	c, err = redisFlags(t, "-redis.addrs", addr, "-redis.tls", "-redis.tls-ca-file", pki.CAFile, "-redis.tls-server-name", "redis.example")
	require.NoError(t, err)
	assert.ErrorContains(t, ping(c), "redis.example", "a server name the certificate does not carry")

	mutual := tlsRedis(t, pki, true)
	c, err = redisFlags(t, "-redis.addrs", mutual, "-redis.tls", "-redis.tls-ca-file", pki.CAFile)
	require.NoError(t, err)
	assert.Error(t, ping(c), "without a client certificate")
	c, err = redisFlags(t, "-redis.addrs", mutual, "-redis.tls", "-redis.tls-ca-file", pki.CAFile,
		"-redis.tls-cert-file", pki.ClientCertFile, "-redis.tls-key-file", pki.ClientKeyFile)
	require.NoError(t, err)
	assert.NoError(t, ping(c), "with a client certificate")

	for _, tc := range []struct {
		args  []string
		field string
	}{
		{[]string{"-redis.tls-ca-file", pki.CAFile}, "redis.tls:"},
		{[]string{"-redis.tls", "-redis.tls-ca-file", "/does/not/exist"}, "redis.tls-ca-file"},
		{[]string{"-redis.tls", "-redis.tls-cert-file", pki.ClientCertFile}, "redis.tls-cert-file, redis.tls-key-file"},
		{[]string{"-redis.tls", "-redis.tls-cert-file", "/does/not/exist", "-redis.tls-key-file", pki.ClientKeyFile}, "redis.tls-cert-file"},
	} {
		_, err := redisFlags(t, tc.args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.field, "%v", tc.args)
	}
	// Files that exist but hold no CA, or a key of another certificate:
	// every connection fails, naming the flag.
	c, err = redisFlags(t, "-redis.addrs", addr, "-redis.tls", "-redis.tls-ca-file", pki.KeyFile)
	require.NoError(t, err)
	assert.ErrorContains(t, ping(c), "redis.tls-ca-file")
	c, err = redisFlags(t, "-redis.addrs", mutual, "-redis.tls", "-redis.tls-ca-file", pki.CAFile,
		"-redis.tls-cert-file", pki.ClientCertFile, "-redis.tls-key-file", pki.KeyFile)
	require.NoError(t, err)
	assert.ErrorContains(t, ping(c), "redis.tls-cert-file / redis.tls-key-file")
}
