// Package deploy proves that the deployment files (docker-compose.yml and
// deploy/kubernetes/*.yaml) pass only settings the fleetgate binaries accept.
//
// Docker cannot run on the test machines, so instead of starting containers
// the tests build each binary a fleetgate container runs and start it the way
// the container would: the container's arguments and exactly its environment
// (plus PATH and HOME), with -config.verify appended, which validates the
// whole configuration and exits. Files the container gets from a mount are
// read from where the deploy file takes them: a compose bind mount's
// directory in the repository, a Kubernetes Secret or ConfigMap of the
// manifests written out to a temporary directory (mounts whose contents are
// not committed get empty stand-ins; see standIns). The frontend's password
// file and JWT keys, which -config.verify only checks for existence, are
// also loaded as the frontend loads them at start. On top of what the
// binary checks itself, every FLEETGATE_* variable must be a name the binary
// lists in its -help (the binary ignores unknown variables, so a typo would
// otherwise silently leave a setting at its default), the orchestrator's
// grace period must outlast shutdown.timeout, and Kubernetes probes must hit
// the operations port. Between compose services, depends_on and named
// volumes must refer to what the file defines, with a healthcheck wherever a
// service waits for another to be healthy.
package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fleetgate builds and runs the binaries for every test of the package.
var fleetgate *verifier

// services are the binaries docker-compose.yml and deploy/kubernetes each
// run: a deploy file that lost one would otherwise pass with nothing checked.
var services = []string{"frontend", "dispatcher", "archiver"}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir, err := os.MkdirTemp("", "fleetgate-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	fleetgate = newVerifier(root, binDir)
	return m.Run()
}

func TestComposeServicesPassOnlySettingsTheBinariesAccept(t *testing.T) {
	invs, err := composeInvocations(filepath.Join(fleetgate.root, "docker-compose.yml"), t.TempDir())
	require.NoError(t, err)
	for _, name := range services {
		require.True(t, runsBinary(invs, name), "docker-compose.yml has no service running the %s; the checks below would pass without looking at it", name)
	}
	for _, inv := range invs {
		t.Run(inv.Source, func(t *testing.T) {
			logInvocation(t, inv)
			assert.NoError(t, fleetgate.check(t.Context(), inv))
		})
	}
}

func TestKubernetesContainersPassOnlySettingsTheBinariesAccept(t *testing.T) {
	files := kubeFiles(t, filepath.Join(fleetgate.root, "deploy", "kubernetes"))
	invs, err := kubernetesInvocations(files, t.TempDir())
	require.NoError(t, err)
	for _, name := range services {
		require.True(t, runsBinary(invs, name), "deploy/kubernetes has no container running the %s; the checks below would pass without looking at it", name)
	}
	for _, inv := range invs {
		t.Run(inv.Source, func(t *testing.T) {
			logInvocation(t, inv)
			assert.NoError(t, fleetgate.check(t.Context(), inv))
			assert.NotEmpty(t, inv.Probes, "a fleetgate container without probes gets traffic before Kafka is reachable and keeps it while draining")
		})
	}
}

func TestComposeServicesAreWired(t *testing.T) {
	require.NoError(t, composeWiring(filepath.Join(fleetgate.root, "docker-compose.yml")))
}

// TestComposeWiringCatchesMistakes holds composeWiring to small files with
// one mistake each; the first case is the control.
func TestComposeWiringCatchesMistakes(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		wantErr  string // empty means the file must pass
	}{
		{
			name: "a service waiting for a healthy database with a healthcheck and a declared volume passes",
			manifest: `
services:
  mongo:
    image: mongo:7
    volumes: ["mongo-data:/data/db", "./init:/docker-entrypoint-initdb.d:ro"]
    healthcheck: {test: ["CMD", "mongosh", "--eval", "db.adminCommand('ping')"]}
  archiver:
    build: .
    depends_on: {mongo: {condition: service_healthy}}
volumes:
  mongo-data:
`,
		},
		{
			name: "ports published on the host's loopback interface pass",
			manifest: `
services:
  redis:
    image: redis:7
    ports: ["127.0.0.1:6379:6379", "[::1]:6380:6379/tcp", {target: 6379, published: "6381", host_ip: 127.0.0.1}, "localhost:6382:6379"]
`,
		},
		{
			name: "a port published on every interface of the host is caught",
			manifest: `
services:
  redis:
    image: redis:7
    ports: ["6379:6379"]
`,
			wantErr: `service redis: ports "6379:6379" publishes on every interface of the host`,
		},
		{
			name: "a port published on a host address that is not loopback is caught",
			manifest: `
services:
  mqtt:
    image: eclipse-mosquitto
    ports: ["0.0.0.0:1883:1883"]
`,
			wantErr: `service mqtt: ports "0.0.0.0:1883:1883" publishes on 0.0.0.0 of the host`,
		},
		{
			name: "a port of the long syntax without host_ip is caught",
			manifest: `
services:
  mqtt:
    image: eclipse-mosquitto
    ports: [{target: 8883, published: "8883"}]
`,
			wantErr: `service mqtt: ports "target 8883" publishes on every interface of the host`,
		},
		{
			name: "a container port alone (a random host port on every interface) is caught",
			manifest: `
services:
  mqtt:
    image: eclipse-mosquitto
    ports: [9001]
`,
			wantErr: `service mqtt: ports "9001" publishes on every interface of the host`,
		},
		{
			name: "waiting for a healthy service that has no healthcheck is caught",
			manifest: `
services:
  mongo: {image: mongo:7}
  archiver:
    build: .
    depends_on: {mongo: {condition: service_healthy}}
`,
			wantErr: "service archiver waits for mongo to be healthy, but mongo has no healthcheck",
		},
		{
			name: "depending on a service that does not exist is caught",
			manifest: `
services:
  archiver:
    build: .
    depends_on: [mongodb]
`,
			wantErr: "service archiver depends on mongodb, which is not a service",
		},
		{
			name: "a named volume missing from the top-level volumes is caught",
			manifest: `
services:
  mongo:
    image: mongo:7
    volumes: ["mongodb-data:/data/db"]
volumes:
  mongo-data:
`,
			wantErr: "service mongo mounts volume mongodb-data, which the top-level volumes do not declare",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "docker-compose.yml")
			require.NoError(t, os.WriteFile(file, []byte(strings.TrimLeft(tt.manifest, "\n")), 0o644))
			err := composeWiring(file)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// TestCheckerCatchesMistakes runs the same extraction and checks over small
// manifests with one mistake each, so the tests above cannot pass because
// the checker looks at nothing. The cases without a wanted error are the
// controls: the same shape, correct, passes.
func TestCheckerCatchesMistakes(t *testing.T) {
	tests := []struct {
		name     string
		kind     string // "compose" or "kubernetes"
		manifest string
		files    map[string]string // written beside the manifest, for compose's bind mounts
		wantErr  []string          // substrings of the error; none means the manifest must pass
	}{
		{
			name: "a correct compose service with a bind-mounted TLS certificate, password file and rules passes",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend", "-log.format=json"]
    stop_grace_period: 45s
    volumes:
      - "./certs:/etc/fleetgate/tls:ro"
      - {type: bind, source: ./auth, target: /etc/fleetgate/auth, read_only: true}
    environment:
      FLEETGATE_KAFKA_BROKERS: "kafka:19092"
      FLEETGATE_NODE_ID: "${NODE_ID:-frontend-1}"
      FLEETGATE_MQTT_TLS_CERT_FILE: /etc/fleetgate/tls/tls.crt
      FLEETGATE_MQTT_TLS_KEY_FILE: /etc/fleetgate/tls/tls.key
      FLEETGATE_AUTH_PASSWORD_FILE: /etc/fleetgate/auth/passwords
      FLEETGATE_AUTHZ_RULES_FILE: /etc/fleetgate/auth/rules.yaml
      GOMAXPROCS: 2
`,
			files: map[string]string{
				"certs/tls.crt":   "certificate",
				"certs/tls.key":   "key",
				"auth/passwords":  testPasswords,
				"auth/rules.yaml": testRules,
			},
		},
		{
			name: "a compose secret and config from files are read from the files",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    secrets: [passwords]
    configs: [{source: rules, target: /etc/fleetgate/rules.yaml}]
    environment:
      FLEETGATE_AUTH_PASSWORD_FILE: /run/secrets/passwords
      FLEETGATE_AUTHZ_RULES_FILE: /etc/fleetgate/rules.yaml
secrets:
  passwords: {file: ./auth/passwords}
configs:
  rules: {file: ./auth/rules.yaml}
`,
			files: map[string]string{"auth/passwords": testPasswords, "auth/rules.yaml": testRules},
		},
		{
			name: "a password file the bind-mounted directory does not hold is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    volumes: ["./auth:/etc/fleetgate/auth:ro"]
    environment:
      FLEETGATE_AUTH_PASSWORD_FILE: /etc/fleetgate/auth/passwords
`,
			files:   map[string]string{"auth/password": testPasswords},
			wantErr: []string{"auth.password-file", "no such file"},
		},
		{
			name: "a broken rules file in a bind-mounted directory is caught by its content",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    volumes: ["./auth:/etc/fleetgate/auth:ro"]
    environment:
      FLEETGATE_AUTH_PASSWORD_FILE: /etc/fleetgate/auth/passwords
      FLEETGATE_AUTHZ_RULES_FILE: /etc/fleetgate/auth/rules.yaml
`,
			files: map[string]string{
				"auth/passwords":  testPasswords,
				"auth/rules.yaml": "rules:\n  - {permission: allow, action: all, topics: [\"a/#/b\"]}\n",
			},
			wantErr: []string{"authz.rules-file", "invalid topic filter"},
		},
		{
			name: "a misspelled variable in a compose service is caught and the intended name suggested",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    environment:
      FLEETGATE_KAFKA_BROKER: "kafka:19092"
`,
			wantErr: []string{"FLEETGATE_KAFKA_BROKER is not a setting of frontend", "did you mean FLEETGATE_KAFKA_BROKERS?"},
		},
		{
			name: "a misspelled variable in the list form of environment is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: /usr/local/bin/frontend
    stop_grace_period: 45s
    environment:
      - FLEETGATE_LOG_FROMAT=json
`,
			wantErr: []string{"FLEETGATE_LOG_FROMAT is not a setting of frontend", "did you mean FLEETGATE_LOG_FORMAT?"},
		},
		{
			// The variable comes from the operator's shell, so the binary
			// never sees it here: only the name check against -help can.
			name: "a misspelled variable passed through from the host shell is caught by its name alone",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    environment:
      - FLEETGATE_KAFKA_BROKERS=kafka:19092
      - FLEETGATE_NODE_IDS
`,
			wantErr: []string{"FLEETGATE_NODE_IDS is not a setting of frontend (did you mean FLEETGATE_NODE_ID?)"},
		},
		{
			name: "a service that runs the published image without building it is checked too",
			kind: "compose",
			manifest: `
services:
  edge:
    image: ghcr.io/fleetgate/fleetgate:1.2.3
    command: ["frontend"]
    stop_grace_period: 45s
    environment:
      FLEETGATE_SHUTDOWN_TIMOUT: 20s
`,
			wantErr: []string{"FLEETGATE_SHUTDOWN_TIMOUT is not a setting of frontend (did you mean FLEETGATE_SHUTDOWN_TIMEOUT?)"},
		},
		{
			name: "a flag value the binary cannot parse in a compose command is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend", "-kafka.partitions=twelve"]
    stop_grace_period: 45s
`,
			wantErr: []string{`invalid value "twelve" for flag -kafka.partitions`},
		},
		{
			name: "a flag the binary does not have is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend", "-kafka.broker=kafka:19092"]
    stop_grace_period: 45s
`,
			wantErr: []string{"flag provided but not defined: -kafka.broker"},
		},
		{
			name: "an environment value that fails validation is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    environment:
      FLEETGATE_LOG_FORMAT: xml
`,
			wantErr: []string{"log.format", `"xml"`},
		},
		{
			name: "a command that prints help instead of starting the service is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend", "-help"]
    stop_grace_period: 45s
`,
			wantErr: []string{"without verifying the configuration"},
		},
		{
			name: "a command naming a binary the repository does not build is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontned"]
`,
			wantErr: []string{`runs "frontned"`, "no Go files"},
		},
		{
			name: "a fleetgate service without a command is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
`,
			wantErr: []string{"no command"},
		},
		{
			name: "a stop_grace_period that ends before the drain is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 30s
    environment:
      FLEETGATE_AUTH_ALLOW_ANONYMOUS: "true"
      FLEETGATE_SHUTDOWN_TIMEOUT: 30s
`,
			wantErr: []string{"gets 30s after SIGTERM but shutdown.timeout is 30s"},
		},
		{
			name: "the default stop grace period is held against the default shutdown timeout",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    environment:
      FLEETGATE_AUTH_ALLOW_ANONYMOUS: "true"
`,
			wantErr: []string{"gets 10s after SIGTERM but shutdown.timeout is 30s"},
		},
		{
			name: "a value taken from the host shell without a default is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    environment:
      FLEETGATE_NODE_ID: ${NODE_ID}
`,
			wantErr: []string{"from the host shell"},
		},
		{
			name: "a certificate path that no volume provides is caught",
			kind: "compose",
			manifest: `
services:
  frontend:
    build: .
    command: ["/usr/local/bin/frontend"]
    stop_grace_period: 45s
    environment:
      FLEETGATE_MQTT_TLS_CERT_FILE: /etc/fleetgate/tls/tls.crt
      FLEETGATE_MQTT_TLS_KEY_FILE: /etc/fleetgate/tls/tls.key
`,
			wantErr: []string{"mqtt.tls-cert-file", "no such file"},
		},
		{
			name: "an archiver without a MongoDB URI is caught",
			kind: "compose",
			manifest: `
services:
  archiver:
    build: .
    command: ["/usr/local/bin/archiver"]
    environment:
      FLEETGATE_KAFKA_BROKERS: "kafka:19092"
`,
			wantErr: []string{"archive.mongodb-uri: required"},
		},
		{
			name: "a misspelled archiver variable is caught and the intended name suggested",
			kind: "compose",
			manifest: `
services:
  archiver:
    build: .
    command: ["/usr/local/bin/archiver"]
    environment:
      FLEETGATE_ARCHIVE_MONGO_URI: "mongodb://mongo:27017"
`,
			wantErr: []string{"FLEETGATE_ARCHIVE_MONGO_URI is not a setting of archiver", "did you mean FLEETGATE_ARCHIVE_MONGODB_URI?"},
		},
		{
			name: "a correct Kubernetes archiver taking its MongoDB URI from a Secret that is not committed passes",
			kind: "kubernetes",
			manifest: `
apiVersion: apps/v1
kind: Deployment
metadata: {name: fg-archiver}
spec:
  template:
    spec:
      containers:
        - name: archiver
          image: fleetgate:latest
          command: ["/usr/local/bin/archiver"]
          env:
            - {name: FLEETGATE_ARCHIVE_MONGODB_URI, valueFrom: {secretKeyRef: {name: mongodb, key: uri}}}
          ports: [{name: http-ops, containerPort: 9466}]
          readinessProbe: {httpGet: {path: /readyz, port: http-ops}}
          livenessProbe: {httpGet: {path: /healthz, port: http-ops}}
`,
		},
		{
			name: "an archiver probed on the frontend's operations port is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg-archiver}
spec:
  containers:
    - name: archiver
      image: fleetgate:latest
      command: ["/usr/local/bin/archiver"]
      env: [{name: FLEETGATE_ARCHIVE_MONGODB_URI, value: "mongodb://mongo:27017"}]
      readinessProbe: {httpGet: {path: /readyz, port: 9464}}
`,
			wantErr: []string{"readinessProbe probes port 9464, but the operations server listens on :9466"},
		},
		{
			name: "a correct Kubernetes Deployment with a ConfigMap, the pod name as node id, a mounted certificate, password file and rules passes",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: ConfigMap
metadata: {name: fg}
data:
  FLEETGATE_KAFKA_BROKERS: "kafka-bootstrap:9092"
  FLEETGATE_LOG_FORMAT: "json"
---
apiVersion: v1
kind: Secret
metadata: {name: fg-auth}
stringData:
  passwords: |
    ` + indent(testPasswords, "    ") + `
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fg-rules}
data:
  rules: |
    ` + indent(testRules, "    ") + `
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fg}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 45
      containers:
        - name: frontend
          image: registry.example.com/fleetgate:0.1.0
          command: ["/usr/local/bin/frontend"]
          args: ["-node.id=$(POD_NAME)", "-ingest.max-unacked-bytes=128MiB"]
          envFrom: [{configMapRef: {name: fg}}]
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: FLEETGATE_MQTT_TLS_CERT_FILE, value: /tls/tls.crt}
            - {name: FLEETGATE_MQTT_TLS_KEY_FILE, value: /tls/tls.key}
            - {name: FLEETGATE_AUTH_PASSWORD_FILE, value: /etc/fleetgate/auth/passwords}
            - {name: FLEETGATE_AUTHZ_RULES_FILE, value: /etc/fleetgate/authz/acl/rules.yaml}
            - {name: GOMEMLIMIT, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
          ports: [{name: ops, containerPort: 9464}]
          readinessProbe: {httpGet: {path: /readyz, port: ops}}
          livenessProbe: {httpGet: {path: /healthz, port: 9464}}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
          resources: {limits: {memory: 1Gi}}
          volumeMounts:
            - {name: tls, mountPath: /tls}
            - {name: auth, mountPath: /etc/fleetgate/auth, readOnly: true}
            - {name: rules, mountPath: /etc/fleetgate/authz, readOnly: true}
      volumes:
        - {name: tls, secret: {secretName: fg-tls}}
        - {name: auth, secret: {secretName: fg-auth}}
        - {name: rules, configMap: {name: fg-rules, items: [{key: rules, path: acl/rules.yaml}]}}
`,
		},
		{
			name: "a password file setting naming a key the mounted Secret does not have is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Secret
metadata: {name: fg-auth}
stringData:
  password: |
    ` + indent(testPasswords, "    ") + `
---
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env: [{name: FLEETGATE_AUTH_PASSWORD_FILE, value: /etc/fleetgate/auth/passwords}]
      volumeMounts: [{name: auth, mountPath: /etc/fleetgate/auth}]
  volumes: [{name: auth, secret: {secretName: fg-auth}}]
`,
			wantErr: []string{"auth.password-file", "no such file"},
		},
		{
			name: "a password file that is not bcrypt lines in a mounted Secret is caught by its content",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Secret
metadata: {name: fg-auth}
stringData:
  passwords: "device-1:demo-device-1\n"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fg-rules}
data:
  rules.yaml: |
    ` + indent(testRules, "    ") + `
---
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env:
        - {name: FLEETGATE_AUTH_PASSWORD_FILE, value: /etc/fleetgate/auth/passwords}
        - {name: FLEETGATE_AUTHZ_RULES_FILE, value: /etc/fleetgate/authz/rules.yaml}
      volumeMounts:
        - {name: auth, mountPath: /etc/fleetgate/auth}
        - {name: rules, mountPath: /etc/fleetgate/authz}
  volumes:
    - {name: auth, secret: {secretName: fg-auth}}
    - {name: rules, configMap: {name: fg-rules}}
`,
			wantErr: []string{"auth.password-file", "not a bcrypt hash"},
		},
		{
			name: "a broken rules file in a mounted ConfigMap is caught by its content",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: ConfigMap
metadata: {name: fg-rules}
data:
  rules.yaml: "rules: []\ngroups: {fleet: [a]}\nextra: 1\n"
---
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env:
        - {name: FLEETGATE_AUTH_ALLOW_ANONYMOUS, value: "true"}
        - {name: FLEETGATE_AUTHZ_RULES_FILE, value: /etc/fleetgate/authz/rules.yaml}
      volumeMounts: [{name: rules, mountPath: /etc/fleetgate/authz}]
  volumes: [{name: rules, configMap: {name: fg-rules}}]
`,
			wantErr: []string{"authz.rules-file", "extra"},
		},
		{
			name: "items naming a key the ConfigMap does not have are caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: ConfigMap
metadata: {name: fg-rules}
data:
  rules.yaml: "rules: []\n"
---
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env: [{name: FLEETGATE_AUTH_ALLOW_ANONYMOUS, value: "true"}]
      volumeMounts: [{name: rules, mountPath: /etc/fleetgate/authz}]
  volumes: [{name: rules, configMap: {name: fg-rules, items: [{key: rules, path: rules.yaml}]}}]
`,
			wantErr: []string{"ConfigMap fg-rules has no key rules"},
		},
		{
			name: "a misspelled variable in a ConfigMap loaded with envFrom is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: ConfigMap
metadata: {name: fg}
data:
  FLEETGATE_KAFKA_BROKER: "kafka-bootstrap:9092"
---
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      envFrom: [{configMapRef: {name: fg}}]
`,
			wantErr: []string{"FLEETGATE_KAFKA_BROKER is not a setting of frontend", "did you mean FLEETGATE_KAFKA_BROKERS?"},
		},
		{
			name: "a container env value the binary cannot parse is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env: [{name: FLEETGATE_SHUTDOWN_TIMEOUT, value: soon}]
`,
			wantErr: []string{"FLEETGATE_SHUTDOWN_TIMEOUT", `"soon"`},
		},
		{
			name: "a flag value in container args that fails validation is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      args: ["-mqtt.receive-maximum=0"]
`,
			wantErr: []string{"mqtt.receive-maximum"},
		},
		{
			name: "an unquoted number as a container env value is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env: [{name: FLEETGATE_KAFKA_PARTITIONS, value: 12}]
`,
			wantErr: []string{"must be a string"},
		},
		{
			name: "a termination grace period the preStop sleep leaves too short is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 35
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env: [{name: FLEETGATE_AUTH_ALLOW_ANONYMOUS, value: "true"}]
      lifecycle: {preStop: {sleep: {seconds: 5}}}
`,
			wantErr: []string{"gets 30s after SIGTERM but shutdown.timeout is 30s"},
		},
		{
			name: "probes aimed at the MQTT port or at the wrong path are caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env: [{name: FLEETGATE_AUTH_ALLOW_ANONYMOUS, value: "true"}]
      readinessProbe: {httpGet: {path: /readyz, port: 1883}}
      livenessProbe: {httpGet: {path: /readyz, port: 9464}}
`,
			wantErr: []string{"readinessProbe probes port 1883", "livenessProbe probes /readyz, want /healthz"},
		},
		{
			name: "a LoadBalancer with only the TLS listeners, and plain MQTT on a ClusterIP Service, passes",
			kind: "kubernetes",
			manifest: exposedFrontend + `
---
apiVersion: v1
kind: Service
metadata: {name: fg-mqtt}
spec:
  type: LoadBalancer
  selector: {app: fg}
  ports:
    - {name: mqtts, port: 8883, targetPort: mqtts}
    - {name: mqtt-wss, port: 443, targetPort: 8083}
---
apiVersion: v1
kind: Service
metadata: {name: fg-internal}
spec:
  selector: {app: fg}
  ports: [{name: mqtt, port: 1883, targetPort: mqtt}, {name: ops, port: 9464}]
`,
		},
		{
			name: "a LoadBalancer opening plain MQTT, plain WebSocket, the operations port or a port nothing listens on is caught",
			kind: "kubernetes",
			manifest: strings.Replace(exposedFrontend, `FLEETGATE_MQTT_WS_TLS, value: "true"`, `FLEETGATE_MQTT_WS_TLS, value: "false"`, 1) + `
---
apiVersion: v1
kind: Service
metadata: {name: fg-mqtt}
spec:
  type: LoadBalancer
  selector: {app: fg}
  ports:
    - {name: mqtt, port: 1883, targetPort: mqtt}
    - {name: mqtt-ws, port: 80, targetPort: 8083}
    - {name: ops, port: 9464, targetPort: ops}
    - {name: other, port: 7000}
---
apiVersion: v1
kind: Service
metadata: {name: fg-other}
spec:
  type: NodePort
  selector: {app: someone-else}
  ports: [{name: mqtt, port: 1883}]
`,
			wantErr: []string{
				"Service/fg-mqtt port mqtt (1883) opens the plain listener mqtt.tcp-addr (:1883) outside the cluster",
				"Service/fg-mqtt port mqtt-ws (80) opens the plain listener mqtt.ws-addr (:8083) outside the cluster",
				"Service/fg-mqtt port ops (9464) opens the operations server (http.addr :9464",
				"Service/fg-mqtt port other (7000) opens container port 7000 outside the cluster, but no listener of the frontend is on it",
			},
		},
		{
			name: "an envFrom ConfigMap missing from the manifests is caught",
			kind: "kubernetes",
			manifest: `
apiVersion: v1
kind: Pod
metadata: {name: fg}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      envFrom: [{configMapRef: {name: elsewhere}}]
`,
			wantErr: []string{"configMapRef elsewhere is not defined"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkManifest(t, tt.kind, tt.manifest, tt.files)
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			t.Logf("caught: %v", err)
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

// exposedFrontend is a frontend Pod with a plain, a TLS and a WebSocket
// listener (wss) and the operations port, for the Services of the exposure
// cases to select.
const exposedFrontend = `
apiVersion: v1
kind: Pod
metadata: {name: fg, labels: {app: fg}}
spec:
  terminationGracePeriodSeconds: 45
  containers:
    - name: frontend
      image: fleetgate:latest
      command: ["/usr/local/bin/frontend"]
      env:
        - {name: FLEETGATE_AUTH_ALLOW_ANONYMOUS, value: "true"}
        - {name: FLEETGATE_MQTT_TLS_CERT_FILE, value: /tls/tls.crt}
        - {name: FLEETGATE_MQTT_TLS_KEY_FILE, value: /tls/tls.key}
        - {name: FLEETGATE_MQTT_WS_ADDR, value: ":8083"}
        - {name: FLEETGATE_MQTT_WS_TLS, value: "true"}
      ports: [{name: mqtt, containerPort: 1883}, {name: mqtts, containerPort: 8883}, {name: ops, containerPort: 9464}]
      readinessProbe: {httpGet: {path: /readyz, port: ops}}
      volumeMounts: [{name: tls, mountPath: /tls}]
  volumes: [{name: tls, secret: {secretName: fg-tls}}]
`

func TestOnlyFleetgateImagesAreChecked(t *testing.T) {
	tests := []struct {
		name  string
		image string
		want  bool
	}{
		{name: "the compose image is fleetgate's", image: "fleetgate:dev", want: true},
		{name: "an image in a registry is fleetgate's by its last path element", image: "ghcr.io/fleetgate/fleetgate:1.2.3", want: true},
		{name: "a pinned digest is fleetgate's", image: "registry.example.com:5000/fleetgate@sha256:0123", want: true},
		{name: "a registry port is not mistaken for a tag", image: "localhost:5000/fleetgate", want: true},
		{name: "Kafka is not fleetgate's", image: "apache/kafka:4.1.0", want: false},
		{name: "an image merely named after fleetgate is not", image: "fleetgate/fleetgate-exporter:1", want: false},
		{name: "no image is not fleetgate's", image: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, isFleetgateImage(tt.image))
		})
	}
}

func TestComposeInterpolationUsesTheDefaultsOfACleanShell(t *testing.T) {
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "plain text is unchanged", in: "kafka:19092", want: "kafka:19092"},
		{name: "a doubled dollar is one dollar", in: "a$$b", want: "a$b"},
		{name: "a default with colon is taken", in: "${NODE:-frontend-1}", want: "frontend-1"},
		{name: "a default without colon is taken", in: "x-${NODE-n1}", want: "x-n1"},
		{name: "an alternative for a set variable is empty", in: "${TLS:+on}", want: ""},
		{name: "a variable without a default is refused", in: "${NODE}", wantErr: "from the host shell"},
		{name: "a required variable is refused", in: "${NODE:?set NODE}", wantErr: "from the host shell"},
		{name: "a bare variable is refused", in: "$NODE", wantErr: "from the host shell"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := interpolate(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// checkManifest writes manifest and files (relative path → contents) to a
// temporary directory, extracts the manifest's fleetgate invocations the way
// the tests of the real files do, and checks each one.
func checkManifest(t *testing.T, kind, manifest string, files map[string]string) error {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "manifest.yaml")
	require.NoError(t, os.WriteFile(file, []byte(strings.TrimLeft(manifest, "\n")), 0o644))
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	var (
		invs []invocation
		err  error
	)
	switch kind {
	case "compose":
		invs, err = composeInvocations(file, t.TempDir())
	case "kubernetes":
		invs, err = kubernetesInvocations([]string{file}, t.TempDir())
	default:
		t.Fatalf("unknown manifest kind %q", kind)
	}
	if err != nil {
		return err
	}
	require.NotEmpty(t, invs, "the manifest has no fleetgate service or container")
	var errs []string
	for _, inv := range invs {
		if err := fleetgate.check(t.Context(), inv); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// kubeFiles lists the manifests in dir.
func kubeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		require.NoError(t, err)
		files = append(files, m...)
	}
	require.NotEmpty(t, files, "no manifests in %s", dir)
	return files
}

func logInvocation(t *testing.T, inv invocation) {
	t.Helper()
	var env []string
	for _, k := range sortedKeys(inv.Env) {
		env = append(env, k+"="+inv.Env[k])
	}
	t.Logf("%s %s\n  env: %s\n  grace: %s, probes: %v", inv.Binary, strings.Join(inv.Args, " "), strings.Join(env, " "), inv.Grace, inv.Probes)
}

func runsBinary(invs []invocation, name string) bool {
	for _, inv := range invs {
		if inv.Binary == name {
			return true
		}
	}
	return false
}

// testPasswords and testRules are a valid password file and rules file for
// the manifests of TestCheckerCatchesMistakes.
const (
	testPasswords = "# user device-1, password demo-device-1\ndevice-1:$2a$10$dodR4gawmsZgnZtkJwCfmech997AskWORpZifCvxzLyG5XdPQzzIa\n"
	testRules     = "rules:\n  - {permission: allow, action: all, topics: [\"devices/%u/#\"]}\n"
)

// indent puts prefix before every line of s but the first, for embedding a
// file in a YAML block scalar whose first line the manifest indents.
func indent(s, prefix string) string {
	return strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+prefix) + "\n"
}
