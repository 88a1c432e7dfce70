package deploy

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestComposeRedisRunsWithItsUsersFile starts redis-server with the compose
// file's own command (its users file read from the bind mount's directory
// in the repository): the service's healthcheck answers PONG, the
// credentials the fleetgate services are given log in and may write under
// fg: only, and no one gets in without a password.
func TestComposeRedisRunsWithItsUsersFile(t *testing.T) {
	bin := testkit.RequireTool(t, "redis-server", "redis-server")
	cli := testkit.RequireTool(t, "redis-cli", "redis-tools")
	data, err := os.ReadFile(filepath.Join(fleetgate.root, "docker-compose.yml"))
	require.NoError(t, err)
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(data, &doc))
	svc := doc.Services["redis"]
	require.NotNil(t, svc, "docker-compose.yml has no redis service")

	// The bind mounts' container directories, mapped to the repository.
	mounts := map[string]string{}
	vols, _ := svc["volumes"].([]any)
	for _, v := range vols {
		parts := strings.Split(v.(string), ":")
		if len(parts) > 1 && strings.HasPrefix(parts[0], "./") {
			mounts[parts[1]] = filepath.Join(fleetgate.root, parts[0])
		}
	}
	args, err := composeWords(svc["command"])
	require.NoError(t, err)
	require.Equal(t, "redis-server", args[0])
	args = args[1:]
	usersFile := ""
	for i, a := range args {
		for dir, local := range mounts {
			if rest, ok := strings.CutPrefix(a, dir+"/"); ok {
				args[i] = filepath.Join(local, rest)
			}
		}
		if i > 0 && args[i-1] == "--aclfile" {
			usersFile = args[i]
		}
	}
	require.NotEmpty(t, usersFile, "the compose redis runs without a users file (--aclfile)")
	addr := testkit.FreeAddr(t)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	args = append(args, "--port", port, "--bind", "127.0.0.1", "--dir", t.TempDir(), "--save", "")
	srv := exec.Command(bin, args...)
	out := &strings.Builder{}
	srv.Stdout, srv.Stderr = out, out
	require.NoError(t, srv.Start())
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	// The healthcheck, as compose runs it, against this server.
	check, err := composeWords(lookup(svc, "healthcheck", "test"))
	require.NoError(t, err)
	require.Equal(t, "CMD", check[0])
	require.Equal(t, "redis-cli", check[1])
	var pong []byte
	require.Eventually(t, func() bool {
		pong, err = exec.Command(cli, append([]string{"-p", port}, check[2:]...)...).CombinedOutput()
		return err == nil && strings.TrimSpace(string(pong)) == "PONG"
	}, 10*time.Second, 50*time.Millisecond, "the healthcheck did not answer PONG: %s %v\nredis-server: %s", pong, err, out)

	env, _ := doc.Services["frontend"]["environment"].(map[string]any)
	user, _ := env["FLEETGATE_REDIS_USERNAME"].(string)
	pass, _ := env["FLEETGATE_REDIS_PASSWORD"].(string)
	require.NotEmpty(t, user, "the frontend has no Redis user")
	for _, name := range []string{"dispatcher"} {
		e, _ := doc.Services[name]["environment"].(map[string]any)
		assert.Equal(t, user, e["FLEETGATE_REDIS_USERNAME"], name)
		assert.Equal(t, pass, e["FLEETGATE_REDIS_PASSWORD"], name)
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: pass})
	defer c.Close()
	require.NoError(t, c.Set(ctx, "fg:{deploy}:probe", "1", time.Minute).Err())
	assert.ErrorContains(t, c.Set(ctx, "elsewhere", "1", time.Minute).Err(), "NOPERM")
	assert.ErrorContains(t, c.FlushAll(ctx).Err(), "NOPERM")
	anon := redis.NewClient(&redis.Options{Addr: addr})
	defer anon.Close()
	assert.Error(t, anon.Get(ctx, "fg:{deploy}:probe").Err(), "the default user, without a password, got in")
}
