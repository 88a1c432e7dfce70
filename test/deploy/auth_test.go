package deploy

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/pkg/acl"
	"github.com/fleetgate/fleetgate/pkg/auth"
)

// demoUserLine is a line of the table of demo passwords at the top of
// deploy/auth/passwords.example: "#   device-1   demo-device-1".
var demoUserLine = regexp.MustCompile(`^#\s+(\S+)\s+(demo-\S+)\s*$`)

// TestDemoCredentialsAreTheDocumentedOnes logs every user of the demo
// password file in with the password its comment (and the READMEs) give,
// through the frontend's own password method: a newcomer's first
// mosquitto_pub must not fail because a hash and its comment drifted apart.
func TestDemoCredentialsAreTheDocumentedOnes(t *testing.T) {
	file := filepath.Join(fleetgate.root, "deploy", "auth", "passwords.example")
	documented := map[string]string{}
	var users []string
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := demoUserLine.FindStringSubmatch(line); m != nil {
			documented[m[1]] = m[2]
		} else if user, _, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			users = append(users, user)
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, users, "%s has no users", file)
	assert.ElementsMatch(t, users, sortedKeys(documented), "every user of %s, and only they, must have its demo password in the comment at the top", file)

	var cfg auth.Config
	fs := flag.NewFlagSet("auth", flag.ContinueOnError)
	cfg.RegisterFlags(fs) // the defaults the frontend runs with
	require.NoError(t, fs.Set("auth.password-file", file))
	chain, err := auth.New(cfg)
	require.NoError(t, err)
	require.NoError(t, chain.Load())
	for _, user := range users {
		t.Run(user, func(t *testing.T) {
			id, err := chain.Authenticate(auth.Request{ClientID: user, Username: user, UsernameSet: true, Password: []byte(documented[user])})
			require.NoError(t, err, "the documented password of %s does not match its hash", user)
			assert.Equal(t, user, id.Name)
			_, err = chain.Authenticate(auth.Request{ClientID: user, Username: user, UsernameSet: true, Password: []byte(documented[user] + "x")})
			assert.Error(t, err, "a wrong password must fail")
		})
	}
}

// TestExampleRulesConfineDevicesAndLetBackendsReadAll checks the decisions
// the comments of deploy/auth/rules.yaml, docker-compose.yml and the READMEs
// promise for the demo users.
func TestExampleRulesConfineDevicesAndLetBackendsReadAll(t *testing.T) {
	rules, err := acl.ReadRules(filepath.Join(fleetgate.root, "deploy", "auth", "rules.yaml"))
	require.NoError(t, err)
	policy := func(identity string) *acl.Policy {
		p, err := rules.For(acl.Subject{Identity: identity, ClientID: identity})
		require.NoError(t, err)
		return p
	}
	tests := []struct {
		name      string
		identity  string
		publish   string // topic name, or
		subscribe string // filter
		want      bool
	}{
		{name: "a device publishes its telemetry", identity: "device-1", publish: "devices/device-1/telemetry", want: true},
		{name: "a device receives its commands", identity: "device-1", subscribe: "devices/device-1/commands/#", want: true},
		{name: "a device does not publish as another device", identity: "device-1", publish: "devices/device-2/telemetry"},
		{name: "a device does not read the fleet", identity: "device-1", subscribe: "devices/#"},
		{name: "a device does not read another device", identity: "device-2", subscribe: "devices/device-1/#"},
		{name: "a device does not command itself", identity: "device-1", publish: "devices/device-1/commands/reboot"},
		{name: "a device does not publish outside devices/", identity: "device-3", publish: "sensors/device-3/temp"},
		{name: "a backend reads every device", identity: "backend", subscribe: "devices/#", want: true},
		{name: "backend instances share the load", identity: "backend", subscribe: "$share/backends/devices/+/telemetry", want: true},
		{name: "a backend commands any device", identity: "backend", publish: "devices/device-2/commands/reboot", want: true},
		{name: "a backend does not forge device data", identity: "backend", publish: "devices/device-2/telemetry"},
		{name: "nobody publishes to $SYS", identity: "backend", publish: "$SYS/broker/uptime"},
		{name: "an identity in no group may do nothing", identity: "device-99", publish: "devices/device-99/telemetry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy(tt.identity)
			if tt.publish != "" {
				assert.Equal(t, tt.want, p.AllowPublish(tt.publish), "%s publishing to %s", tt.identity, tt.publish)
			} else {
				assert.Equal(t, tt.want, p.AllowSubscribe(tt.subscribe), "%s subscribing to %s", tt.identity, tt.subscribe)
			}
		})
	}
}

// TestExampleQuotasSlowDevicesAndNotBackends checks the publish quotas the
// comments of deploy/auth/rules.yaml promise.
func TestExampleQuotasSlowDevicesAndNotBackends(t *testing.T) {
	rules, err := acl.ReadRules(filepath.Join(fleetgate.root, "deploy", "auth", "rules.yaml"))
	require.NoError(t, err)
	quota := func(identity string) (acl.Quota, bool) {
		p, err := rules.For(acl.Subject{Identity: identity, ClientID: identity})
		require.NoError(t, err)
		return p.Quota()
	}
	q, ok := quota("device-2")
	require.True(t, ok)
	assert.Equal(t, 10.0, *q.Rate)
	assert.Equal(t, 100, *q.Burst)
	assert.Equal(t, int64(256<<10), *q.ByteRate)
	q, ok = quota("backend")
	require.True(t, ok)
	assert.Zero(t, *q.Rate, "no bound")
	assert.Zero(t, *q.ByteRate, "no bound")
	_, ok = quota("device-99")
	assert.False(t, ok, "an identity in no group has the node's quota")
}

// TestKubernetesCarriesTheExampleOfDeployAuth holds the Secret and the
// ConfigMap of deploy/kubernetes to the files of deploy/auth, which the
// tests above check: the copies must not drift apart.
func TestKubernetesCarriesTheExampleOfDeployAuth(t *testing.T) {
	m, err := readKubeManifests(kubeFiles(t, filepath.Join(fleetgate.root, "deploy", "kubernetes")))
	require.NoError(t, err)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(fleetgate.root, "deploy", "auth", name))
		require.NoError(t, err)
		return string(b)
	}
	require.Contains(t, m.secrets, "fleetgate-auth")
	assert.Equal(t, read("passwords.example"), m.secrets["fleetgate-auth"]["passwords"], "Secret fleetgate-auth key passwords must be deploy/auth/passwords.example")
	require.Contains(t, m.configMapFiles, "fleetgate-authz")
	assert.Equal(t, read("rules.yaml"), m.configMapFiles["fleetgate-authz"]["rules.yaml"], "ConfigMap fleetgate-authz key rules.yaml must be deploy/auth/rules.yaml")
}

// TestKustomizationListsEveryManifest: the Kubernetes checks read every
// manifest of the directory, and `kubectl apply -k` applies only those
// kustomization.yaml lists; a Secret the checks read but nobody applies
// would make them pass for a pod that cannot start.
func TestKustomizationListsEveryManifest(t *testing.T) {
	dir := filepath.Join(fleetgate.root, "deploy", "kubernetes")
	var k struct {
		Resources []string `yaml:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, &k))
	var files []string
	for _, f := range kubeFiles(t, dir) {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			files = append(files, b)
		}
	}
	slices.Sort(files)
	slices.Sort(k.Resources)
	assert.Equal(t, files, k.Resources)
}
