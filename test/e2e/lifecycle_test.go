package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

func TestSIGTERMDrainsTheFrontendAndExitsZero(t *testing.T) {
	kafka := startKafka(t)
	fe := startFrontend(t, kafka, "-shutdown.timeout", "5s")

	v5 := testkit.DialRaw(t, fe.mqtt, 5)
	v5.Connect("drain-v5", true)
	v5.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "drain/x", PacketID: 1, Payload: []byte("before")})
	ack, err := v5.Recv(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Puback, ack.FixedHeader.Type)

	require.NoError(t, fe.Cmd.Process.Signal(syscall.SIGTERM))
	pk, err := v5.Recv(10 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, packets.Disconnect, pk.FixedHeader.Type)
	assert.Equal(t, byte(0x8B), pk.ReasonCode, "server shutting down")
	assert.Equal(t, 0, fe.Wait(15*time.Second), "exit code")
	assert.Contains(t, fe.Output(), "shutdown complete")

	recs := testkit.NewReader(t, kafka, "mqtt.inbound").Read(1, 10*time.Second)
	assert.Equal(t, "before", string(recs[0].Value))
}

func TestAnInvalidConfigurationStopsTheFrontendWithAnErrorNamingTheField(t *testing.T) {
	yamlFile := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(yamlFile, []byte("kafka:\n  topik: x\n"), 0o600))
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	passwords := filepath.Join(t.TempDir(), "passwords")
	require.NoError(t, os.WriteFile(passwords, []byte("device-1:"+string(hash)+"\n"), 0o600))
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(rules, []byte("rules:\n  - {permission: allow, action: all, topics: [\"devices/%u/#\"]}\n"), 0o600))
	cases := []struct {
		name  string
		env   []string
		args  []string
		wants []string
	}{
		{"a bad flag value names the flag", nil, []string{"-kafka.partitions", "0"}, []string{"kafka.partitions"}},
		{"a bad environment value names the variable and the flag", []string{"FLEETGATE_MQTT_CONNECT_TIMEOUT=soon"}, nil,
			[]string{"FLEETGATE_MQTT_CONNECT_TIMEOUT", "mqtt.connect-timeout"}},
		{"a value that fails validation names the field", []string{"FLEETGATE_MQTT_RECEIVE_MAXIMUM=0"}, nil, []string{"mqtt.receive-maximum"}},
		{"a misspelled environment variable is an error", []string{"FLEETGATE_KAFKA_BROKER=x:9092"}, []string{"-auth.allow-anonymous=true"}, []string{"FLEETGATE_KAFKA_BROKER"}},
		{"an unknown key in the YAML file names the key", nil, []string{"-config.file", yamlFile}, []string{"topik"}},
		{"half a TLS key pair is refused", nil, []string{"-mqtt.tls-cert-file", yamlFile}, []string{"mqtt.tls-key-file"}},
		{"no authenticator refuses to start, naming the way to let anonymous clients in on purpose", nil, nil,
			[]string{"auth.methods: no authentication method is configured", "auth.allow-anonymous=true"}},
		{"a password file that does not parse stops the start", nil, []string{"-auth.password-file", yamlFile},
			[]string{"auth.password-file", "bad.yaml"}},
		{"a rules file that does not parse stops the start", nil, []string{"-auth.allow-anonymous=true", "-authz.rules-file", yamlFile},
			[]string{"authz.rules-file", "bad.yaml"}},
		{"clients that authenticate without a rules file refuse to start, naming both ways on", nil, []string{"-auth.password-file", passwords},
			[]string{"authz.rules-file: no rules file", "authz.allow-all=true"}},
		{"authz.allow-all beside a rules file is a contradiction", nil, []string{"-auth.password-file", passwords, "-authz.rules-file", rules, "-authz.allow-all"},
			[]string{"authz.allow-all: set together with authz.rules-file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(binDir, "frontend"), tc.args...)
			cmd.Env = append(testkit.CleanEnv(), tc.env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "must exit non-zero; output: %s", out)
			assert.NotZero(t, ee.ExitCode())
			for _, w := range tc.wants {
				assert.Contains(t, string(out), w)
			}
			assert.NotContains(t, string(out), "listener started", "nothing may start")
		})
	}

	t.Run("-help documents every option with its environment variable", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(binDir, "frontend"), "-help").CombinedOutput()
		require.NoError(t, err)
		flags := strings.Count(string(out), "\n  -")
		envs := strings.Count(string(out), "env FLEETGATE_")
		assert.Greater(t, flags, 20)
		assert.Equal(t, flags, envs, "every flag lists its environment variable")
	})
	t.Run("-config.verify accepts authenticated clients with a rules file, or with every topic opened on purpose", func(t *testing.T) {
		for _, open := range [][]string{{"-authz.rules-file", rules}, {"-authz.allow-all"}} {
			out, err := exec.Command(filepath.Join(binDir, "frontend"), append([]string{"-config.verify", "-auth.password-file", passwords}, open...)...).CombinedOutput()
			require.NoError(t, err, "%v: %s", open, out)
			assert.Contains(t, string(out), "configuration is valid")
		}
	})
	t.Run("-config.verify accepts a valid configuration without starting and never prints a secret", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(binDir, "frontend"), "-config.verify", "-kafka.brokers", "kafka:9092",
			"-kafka.sasl.mechanism", "SCRAM-SHA-512", "-kafka.sasl.username", "fleet", "-auth.allow-anonymous=true")
		cmd.Env = append(testkit.CleanEnv(), "FLEETGATE_KAFKA_SASL_PASSWORD=hunter2")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "configuration is valid")
		assert.Contains(t, string(out), "<redacted>")
		assert.NotContains(t, string(out), "hunter2")
	})
}

func TestTheDevStackKeepsMessagesAcrossARestart(t *testing.T) {
	pub := testkit.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	dataDir := t.TempDir()
	kafka, mqtt, ops, redis := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	args := []string{"-dev.data-dir", dataDir, "-dev.kafka-addr", kafka, "-mqtt.tcp-addr", mqtt, "-mqtt.ws-addr", "", "-http.addr", ops, "-dev.redis-listen", redis}
	dev := start(t, "fleetgate-dev", args...)
	require.Eventually(t, func() bool { return strings.Contains(dev.Output(), "fleetgate dev stack is up") }, 20*time.Second, 50*time.Millisecond)
	assert.Contains(t, dev.Output(), redis, "the banner names the Redis it started")
	_, port, _ := strings.Cut(mqtt, ":")
	out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", port, "-q", "1", "-i", "restart-test", "-t", "dev/persist", "-m", "still here").CombinedOutput()
	require.NoError(t, err, "%s", out)
	// The stack's dispatcher consumes the record (nobody subscribes yet).
	assert.Contains(t, dev.Output(), "Dispatcher                on")
	require.Eventually(t, func() bool {
		return strings.Contains(httpGet(t, "http://"+ops+"/metrics"), "fleetgate_dispatch_records_routed_total 1")
	}, 30*time.Second, 100*time.Millisecond, "the dev stack's dispatcher did not route the record")
	require.NoError(t, dev.Cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, dev.Wait(20*time.Second))

	dev2 := start(t, "fleetgate-dev", args...)
	require.Eventually(t, func() bool { return strings.Contains(dev2.Output(), "fleetgate dev stack is up") }, 20*time.Second, 50*time.Millisecond)
	recs := testkit.NewReader(t, kafka, "mqtt.inbound").Read(1, 15*time.Second)
	assert.Equal(t, "still here", string(recs[0].Value))
	assert.Equal(t, "restart-test", string(recs[0].Key))

	// Killed outright, the stack leaves no redis-server behind.
	require.NoError(t, dev2.Cmd.Process.Signal(syscall.SIGKILL))
	dev2.Wait(10 * time.Second)
	require.Eventually(t, func() bool {
		c, err := (netDialer{}).dial(redis)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 50*time.Millisecond, "redis-server outlived the dev stack")
}
