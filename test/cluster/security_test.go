package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// The attacks below run against a whole cluster (two frontends behind
// HAProxy, two dispatchers, the Kafka process, redis-server) configured as
// the deploy files are: a password file, JWTs, client certificates and a
// rules file, nothing open. Each attack expects the exact answer the
// specification gives, and that the victim's session, queue and retained
// message are as they were: in Redis and as the victim's client sees them.

// rulesYAML confines every device to devices/<its identity>/ and lets the
// backends read every device and command them.
const rulesYAML = `groups:
  backends: [backend]
rules:
  - permission: allow
    action: all
    topics: ["devices/%u/#"]
  - permission: allow
    action: subscribe
    topics: ["devices/#"]
    groups: [backends]
  - permission: allow
    action: publish
    topics: ["devices/+/commands/#"]
    groups: [backends]
`

// accessKit is the credentials of the attacked cluster and the tools of its
// attackers.
type accessKit struct {
	dir                 string
	passwords, rules    string
	deviceKey, otherKey *ecdsa.PrivateKey // ES256: trusted, untrusted
	rsaKey              *rsa.PrivateKey   // RS256, trusted
	rsaPublicPEM        []byte
	caPool              *x509.CertPool // verifies the frontends' certificate
	device3, stranger   tls.Certificate
	ca                  *x509.Certificate // the fleet's CA, and its key: it signs CRLs too
	caKey               *ecdsa.PrivateKey
}

var passwordOf = map[string]string{"device-1": "pw-one", "device-2": "pw-two", "backend": "pw-backend"}

func newAccessKit(t *testing.T) *accessKit {
	t.Helper()
	k := &accessKit{dir: t.TempDir()}
	var lines []string
	for user, pw := range passwordOf {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		lines = append(lines, user+":"+string(h))
	}
	k.passwords = k.write(t, "passwords", strings.Join(lines, "\n")+"\n")
	k.rules = k.write(t, "rules.yaml", rulesYAML)

	var err error
	k.deviceKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	k.otherKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	k.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecDER, err := x509.MarshalPKIXPublicKey(&k.deviceKey.PublicKey)
	require.NoError(t, err)
	rsaDER, err := x509.MarshalPKIXPublicKey(&k.rsaKey.PublicKey)
	require.NoError(t, err)
	k.rsaPublicPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	k.write(t, "jwt-es.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER})))
	k.write(t, "jwt-rs.pem", string(k.rsaPublicPEM))

	// The fleet's CA signs the frontends' certificate and the devices';
	// another CA signs a stranger's certificate with a device's name.
	ca, caKey := newCA(t, "fleet CA")
	other, otherKey := newCA(t, "other CA")
	k.caPool = x509.NewCertPool()
	k.caPool.AddCert(ca)
	server := issue(t, ca, caKey, "frontend", true)
	k.writeCert(t, "server", server)
	k.write(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})))
	k.ca, k.caKey = ca, caKey
	k.device3 = issue(t, ca, caKey, "device-3", false)
	k.stranger = issue(t, other, otherKey, "device-3", false)
	return k
}

// dialTLS opens a TLS connection to addr presenting cert (nil: none) and
// completes the handshake.
func (k *accessKit) dialTLS(addr string, cert *tls.Certificate) (net.Conn, error) {
	cfg := &tls.Config{RootCAs: k.caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	// TLS 1.3 reports a refused client certificate on the first read.
	if err := conn.Handshake(); err != nil {
		return conn, err
	}
	// paho.golang writes a packet in several Writes and its pinger writes
	// PINGREQ from a goroutine of its own right after CONNACK: on a
	// *tls.Conn, which takes each Write as it comes, the PINGREQ could land
	// inside a PUBLISH, which the server rightly refuses as malformed (a CI
	// flake; eclipse-paho/paho.golang#90). Its thread-safe wrapper writes
	// each packet under one lock.
	return pahopackets.NewThreadSafeConn(conn), nil
}

// writeCRL writes the fleet CA's revocation list of serials to crl.pem and
// returns its path.
func (k *accessKit) writeCRL(t *testing.T, number int64, serials ...*big.Int) string {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number),
		ThisUpdate: time.Now(), NextUpdate: time.Now().Add(24 * time.Hour), RevokedCertificateEntries: entries}, k.ca, k.caKey)
	require.NoError(t, err)
	return k.write(t, "crl.pem", string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})))
}

func (k *accessKit) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(k.dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func (k *accessKit) writeCert(t *testing.T, name string, c tls.Certificate) {
	t.Helper()
	k.write(t, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})))
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	require.NoError(t, err)
	k.write(t, name+"-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
}

// args are the frontends' access flags: every method, no anonymous
// clients, the rules; every other access setting (the reload interval
// among them) at its default.
func (k *accessKit) args() []string {
	p := func(n string) string { return filepath.Join(k.dir, n) }
	return []string{
		"-auth.password-file", k.passwords,
		"-auth.jwt.key-files", p("jwt-es.pem") + "," + p("jwt-rs.pem"),
		"-mqtt.tls-cert-file", p("server.pem"), "-mqtt.tls-key-file", p("server-key.pem"),
		"-mqtt.tls-client-ca-file", p("ca.pem"),
		"-authz.rules-file", k.rules,
	}
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// token signs claims for sub with method and key; exp and nbf are relative
// to now.
func token(t *testing.T, method jwt.SigningMethod, key any, sub string, exp, nbf time.Duration) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix()}
	if nbf != 0 {
		claims["nbf"] = time.Now().Add(nbf).Unix()
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	require.NoError(t, err)
	return s
}

// connectV5 connects an MQTT 5 client over conn and returns the client and
// its CONNACK whatever its reason code.
func connectV5(t *testing.T, conn net.Conn, cp *paho.Connect, in *inbox) (*v5, *paho.Connack, error) {
	t.Helper()
	c := &v5{disconnect: make(chan *paho.Disconnect, 1), lost: make(chan struct{})}
	markLost := func() { c.lostOnce.Do(func() { close(c.lost) }) }
	cfg := paho.ClientConfig{ClientID: cp.ClientID, Conn: conn, PacketTimeout: 15 * time.Second,
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disconnect <- d:
			default:
			}
			markLost()
		},
		OnClientError: func(error) { markLost() }}
	if in != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			in.v5Handler(pr.Packet)
			return true, nil
		}}
	}
	c.Client = paho.NewClient(cfg)
	cp.KeepAlive = 30
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	c.connack = ca
	if err == nil {
		t.Cleanup(func() {
			select {
			case <-c.lost:
			default:
				_ = c.Disconnect(&paho.Disconnect{})
			}
		})
	} else {
		_ = conn.Close()
	}
	return c, ca, err
}

// login is a CONNECT with a username and password.
func login(clientID, user, password string) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: true, Username: user, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true}
}

// device logs in as user with its password and client id.
func device(user string) *paho.Connect { return login(user, user, passwordOf[user]) }

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	return conn
}

// answer is the reason code of a CONNACK, or -1 when the connection failed
// before one arrived.
func answer(ca *paho.Connack) int {
	if ca == nil {
		return -1
	}
	return int(ca.ReasonCode)
}

// dialV3Login connects an MQTT 3.1.1 client with credentials and returns
// the connect error (nil on success).
func dialV3Login(t *testing.T, url, clientID, user, password string, clean bool, tlsCfg *tls.Config, in *inbox) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetUsername(user).SetPassword(password).SetTLSConfig(tlsCfg)
	if in != nil {
		o.SetDefaultPublishHandler(in.v3Handler)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(15*time.Second), "connect %s timed out", clientID)
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return c, tok.Error()
}

func suback(t *testing.T, c *v5, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil { // paho returns the SUBACK with an error when it refuses
		require.NoError(t, err)
	}
	require.Len(t, sa.Reasons, 1)
	return sa.Reasons[0]
}

func puback(t *testing.T, c *v5, topic, payload string, retain bool) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(payload)})
	if err != nil && resp == nil {
		require.NoError(t, err)
	}
	return resp.ReasonCode
}

// sessionOf reads clientID's session and subscriptions from Redis.
func (c *testCluster) sessionOf(t *testing.T, clientID string) (session.Info, []string) {
	t.Helper()
	store := session.New(c.redis, session.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := store.Session(ctx, clientID)
	require.NoError(t, err, "session of %s", clientID)
	subs, err := store.Subscriptions(ctx, clientID)
	require.NoError(t, err)
	var filters []string
	for _, s := range subs {
		filters = append(filters, s.Filter)
	}
	return info, filters
}

// inboundUntil reads mqtt.inbound from its start until a record with
// payload marker arrives, and returns the records before it.
func (c *testCluster) inboundUntil(t *testing.T, marker string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka), kgo.ConsumeTopics("mqtt.inbound"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	var recs []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		for _, r := range fs.Records() {
			if string(r.Value) == marker {
				return recs
			}
			recs = append(recs, r)
		}
	}
	t.Fatalf("marker %q never reached Kafka", marker)
	return nil
}

func topicOf(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == kafkarecord.HeaderTopic {
			return string(h.Value)
		}
	}
	return ""
}

// TestWithEveryDefaultAHostileDeviceGetsNothingThatIsNotItsOwn runs the
// attacks of a device on the cluster with every setting at the product's
// default (files reloaded on the default interval too: no test reloads
// them here).
func TestWithEveryDefaultAHostileDeviceGetsNothingThatIsNotItsOwn(t *testing.T) {
	t.Parallel()
	kit := newAccessKit(t)
	c := startClusterWith(t, clusterOptions{access: kit.args(), tls: true, defaults: true})
	fa, fb := c.frontends[0], c.frontends[1]

	// The victim: device-2, persistent on frontend B, subscribed to its
	// commands, with a retained state.
	victimIn := newInbox()
	victim, ca, err := connectV5(t, dialTCP(t, fb.mqtt), func() *paho.Connect {
		cp := device("device-2")
		cp.CleanStart = false
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
		return cp
	}(), victimIn)
	require.NoError(t, err)
	require.Zero(t, ca.ReasonCode)
	victim.subscribe(t, "devices/device-2/commands/#")
	require.Zero(t, puback(t, victim, "devices/device-2/state", "victim's state", true))
	before, beforeSubs := c.sessionOf(t, "device-2")
	require.Equal(t, "device-2", before.Owner)

	backend, ca, err := connectV5(t, dialTCP(t, c.lb), device("backend"), nil)
	require.NoError(t, err, "connack %d", answer(ca))

	// The attacker: device-1, through the load balancer, MQTT 5.
	attackerIn := newInbox()
	attacker, ca, err := connectV5(t, dialTCP(t, fa.mqtt), device("device-1"), attackerIn)
	require.NoError(t, err, "connack %d", answer(ca))

	t.Run("MQTT 5 subscriptions beyond its own subtree are answered 0x87", func(t *testing.T) {
		for _, f := range []string{"#", "devices/#", "devices/device-2/#", "devices/+/state", "+/device-2/commands/#",
			"$share/g/devices/device-2/#", "$share/g/#", "devices/device-1/../device-2"} {
			want := byte(0x87)
			if f == "devices/device-1/../device-2" {
				want = 1 // topic levels are literal: ".." is a level of its own subtree
			}
			require.Equal(t, want, suback(t, attacker, f), "SUBACK for %s", f)
		}
		require.Equal(t, byte(1), suback(t, attacker, "devices/device-1/#"), "its own subtree is granted")
	})

	t.Run("MQTT 5 publishes to another device's topics are answered 0x87 and never reach Kafka", func(t *testing.T) {
		require.Equal(t, byte(0x87), puback(t, attacker, "devices/device-2/commands/reboot", "forged command", false))
		require.Equal(t, byte(0x87), puback(t, attacker, "devices/device-2/state", "forged state", true), "retained overwrite")
		require.Equal(t, byte(0x87), puback(t, attacker, "devices/device-2/state", "", true), "retained delete")
		require.Equal(t, byte(0x90), puback(t, attacker, "$SYS/broker/x", "sys", false), "$SYS is nobody's: Topic Name invalid")
		require.Zero(t, puback(t, attacker, "devices/device-1/telemetry", "marker-v5", false))
		for _, r := range c.inboundUntil(t, "marker-v5") {
			require.NotEqual(t, "device-1", string(r.Key), "a refused publish of device-1 reached Kafka: %s %q", topicOf(r), r.Value)
		}
	})

	t.Run("MQTT 5 CONNECTs for the victim's client id, on either node, are refused and change nothing", func(t *testing.T) {
		for _, f := range []*node{fa, fb} {
			for _, clean := range []bool{false, true} {
				cp := login("device-2", "device-1", passwordOf["device-1"])
				cp.CleanStart = clean
				_, ca, err := connectV5(t, dialTCP(t, f.mqtt), cp, nil)
				require.Error(t, err)
				require.Equal(t, 0x87, answer(ca), "on %s, clean start %t", f.id, clean)
			}
		}
		select {
		case <-victim.lost:
			t.Fatal("the victim's connection was closed")
		default:
		}
		after, afterSubs := c.sessionOf(t, "device-2")
		require.Equal(t, before.Epoch, after.Epoch, "the session was not taken over")
		require.Equal(t, before.Node, after.Node)
		require.True(t, after.Connected)
		require.Equal(t, beforeSubs, afterSubs, "the subscriptions were not wiped")
	})

	t.Run("MQTT 3.1.1 attacks get 0x80 per filter, a closed connection for a publish, 0x05 for a session", func(t *testing.T) {
		url := "tcp://" + c.lb
		v3, err := dialV3Login(t, url, "device-1-v3", "device-1", passwordOf["device-1"], true, nil, nil)
		require.NoError(t, err)
		tok := v3.SubscribeMultiple(map[string]byte{"#": 1, "devices/device-2/#": 1, "devices/device-1/v3/#": 1}, nil)
		require.True(t, tok.WaitTimeout(15*time.Second))
		got := tok.(*mqtt.SubscribeToken).Result()
		require.Equal(t, map[string]byte{"#": 0x80, "devices/device-2/#": 0x80, "devices/device-1/v3/#": 1}, got)

		pub := v3.Publish("devices/device-2/commands/reboot", 1, false, "forged over 3.1.1")
		pub.WaitTimeout(5 * time.Second)
		require.Eventually(t, func() bool { return !v3.IsConnectionOpen() }, 15*time.Second, 50*time.Millisecond,
			"[MQTT-3.3.5-2]: no negative ack in 3.1.1; the connection is closed rather than the publish acknowledged")

		_, err = dialV3Login(t, url, "device-2", "device-1", passwordOf["device-1"], false, nil, nil)
		require.ErrorContains(t, err, "not Authorized")
		_, err = dialV3Login(t, url, "device-2", "device-1", passwordOf["device-1"], true, nil, nil)
		require.ErrorContains(t, err, "not Authorized")

		ok, err := dialV3Login(t, url, "device-1-v3b", "device-1", passwordOf["device-1"], true, nil, nil)
		require.NoError(t, err)
		tok2 := ok.Publish("devices/device-1/telemetry", 1, false, "marker-v3")
		require.True(t, tok2.WaitTimeout(15*time.Second))
		require.NoError(t, tok2.Error())
		for _, r := range c.inboundUntil(t, "marker-v3") {
			require.NotEqual(t, "forged over 3.1.1", string(r.Value), "a refused 3.1.1 publish reached Kafka")
		}
	})

	t.Run("the victim's queue, retained message and deliveries are untouched", func(t *testing.T) {
		// The backend commands the victim while it is offline; the
		// attacker tries again meanwhile; the victim gets the command.
		require.NoError(t, victim.Disconnect(&paho.Disconnect{}))
		require.Eventually(t, func() bool { info, _ := c.sessionOf(t, "device-2"); return !info.Connected }, 15*time.Second, 50*time.Millisecond)
		require.Zero(t, puback(t, backend, "devices/device-2/commands/update", "real command", false))
		require.Eventually(t, func() bool { info, _ := c.sessionOf(t, "device-2"); return info.QueuedBytes > 0 }, 15*time.Second, 50*time.Millisecond)
		cp := login("device-2", "device-1", passwordOf["device-1"])
		_, ca, _ := connectV5(t, dialTCP(t, fa.mqtt), cp, nil)
		require.Equal(t, 0x87, answer(ca))
		queued, subs := c.sessionOf(t, "device-2")
		require.Positive(t, queued.QueuedBytes, "the queue is still there")
		require.Equal(t, beforeSubs, subs)

		back := newInbox()
		resumed := func() *paho.Connect {
			cp := device("device-2")
			cp.CleanStart = false
			exp := uint32(3600)
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
			return cp
		}()
		v, ca, err := connectV5(t, dialTCP(t, fb.mqtt), resumed, back)
		require.NoError(t, err)
		require.True(t, ca.SessionPresent)
		require.True(t, back.waitFor(15*time.Second, func(m []received) bool { return has(m, "devices/device-2/commands/update", "real command") }))
		require.Equal(t, byte(1), suback(t, v, "devices/device-2/state"))
		require.True(t, back.waitFor(15*time.Second, func(m []received) bool { return has(m, "devices/device-2/state", "victim's state") }),
			"the retained message is the victim's own: %v", back.snapshot())
		for _, m := range back.snapshot() {
			require.NotContains(t, m.payload, "forged")
		}
	})
}

// metricsOf returns a process's /metrics text.
func metricsOf(t *testing.T, ops string) string {
	t.Helper()
	resp, err := http.Get("http://" + ops + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// reload sends SIGHUP to every frontend and waits until each counted a
// reload of what with outcome.
func (c *testCluster) reload(t *testing.T, what, outcome string) {
	t.Helper()
	series := fmt.Sprintf(`fleetgate_frontend_auth_reloads_total{outcome=%q,what=%q}`, outcome, what)
	counts := map[string]int{}
	for _, f := range c.frontends {
		counts[f.id] = reloadsIn(metricsOf(t, f.ops), series)
		require.NoError(t, f.Cmd.Process.Signal(syscall.SIGHUP))
	}
	for _, f := range c.frontends {
		require.Eventually(t, func() bool { return reloadsIn(metricsOf(t, f.ops), series) > counts[f.id] },
			15*time.Second, 50*time.Millisecond, "%s never counted another %s", f.id, series)
	}
}

// sumOf is the sum of series over the frontends' /metrics.
func (c *testCluster) sumOf(t *testing.T, series string) int {
	t.Helper()
	n := 0
	for _, f := range c.frontends {
		n += reloadsIn(metricsOf(t, f.ops), series)
	}
	return n
}

// reloadsIn is the value of series in a /metrics text, 0 when absent.
func reloadsIn(metrics, series string) int {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// TestWithEveryDefaultForgedCredentialsAreRefusedAndAReloadNeverOpensADoor:
// every setting at the product's default; the files are reloaded with
// SIGHUP as an operator would, the periodic check (10 s) running as well.
func TestWithEveryDefaultForgedCredentialsAreRefusedAndAReloadNeverOpensADoor(t *testing.T) {
	t.Parallel()
	kit := newAccessKit(t)
	c := startClusterWith(t, clusterOptions{access: kit.args(), tls: true, defaults: true})
	fa := c.frontends[0]

	t.Run("tokens", func(t *testing.T) {
		valid := token(t, jwt.SigningMethodES256, kit.deviceKey, "device-4", time.Hour, 0)
		forged := valid[:len(valid)-4] + map[bool]string{true: "AAAA", false: "BBBB"}[!strings.HasSuffix(valid, "AAAA")]
		none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "device-4", "exp": time.Now().Add(time.Hour).Unix()}).
			SignedString(jwt.UnsafeAllowNoneSignatureType)
		require.NoError(t, err)
		for _, tc := range []struct {
			name, token string
			want        int
		}{
			{"a token signed by a trusted key is accepted", valid, 0},
			{"an RS256 token of a trusted key is accepted", token(t, jwt.SigningMethodRS256, kit.rsaKey, "device-4", time.Hour, 0), 0},
			{"a forged signature is refused", forged, 0x86},
			{"an expired token is refused", token(t, jwt.SigningMethodES256, kit.deviceKey, "device-4", -time.Hour, 0), 0x86},
			{"a token not valid yet is refused", token(t, jwt.SigningMethodES256, kit.deviceKey, "device-4", 2*time.Hour, time.Hour), 0x86},
			{"a token of an untrusted key is refused", token(t, jwt.SigningMethodES256, kit.otherKey, "device-4", time.Hour, 0), 0x86},
			{"alg none is refused", none, 0x86},
			{"HS256 signed with the RSA public key is refused", token(t, jwt.SigningMethodHS256, kit.rsaPublicPEM, "device-4", time.Hour, 0), 0x86},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cl, ca, _ := connectV5(t, dialTCP(t, c.lb), login("device-4", "", tc.token), nil)
				require.Equal(t, tc.want, answer(ca))
				if tc.want == 0 {
					require.Zero(t, puback(t, cl, "devices/device-4/telemetry", "from a token", false))
					require.Equal(t, byte(0x87), puback(t, cl, "devices/device-1/telemetry", "forged", false))
				}
			})
		}
		// A 3.1.1 password needs a username [MQTT-3.1.2-22]; the token
		// decides the identity whatever it is.
		_, err = dialV3Login(t, "tcp://"+c.lb, "device-4", "device-4", token(t, jwt.SigningMethodES256, kit.deviceKey, "device-4", -time.Hour, 0), true, nil, nil)
		require.ErrorContains(t, err, "bad user name or password", "MQTT 3.1.1: 0x04")
	})

	t.Run("certificates", func(t *testing.T) {
		dialTLS := func(cert *tls.Certificate) (net.Conn, error) { return kit.dialTLS(fa.tls, cert) }
		conn, err := dialTLS(&kit.device3)
		require.NoError(t, err)
		cl, ca, err := connectV5(t, conn, &paho.Connect{ClientID: "device-3", CleanStart: true}, nil)
		require.NoError(t, err, "connack %d", answer(ca))
		require.Zero(t, puback(t, cl, "devices/device-3/telemetry", "from a certificate", false), "the certificate's CN is the identity")
		require.Equal(t, byte(0x87), puback(t, cl, "devices/device-1/telemetry", "forged", false))

		for name, cert := range map[string]*tls.Certificate{"a certificate of another CA": &kit.stranger, "no certificate": nil} {
			conn, err := dialTLS(cert)
			if err == nil {
				_, ca, err = connectV5(t, conn, &paho.Connect{ClientID: "device-3", CleanStart: true}, nil)
			}
			require.Error(t, err, "%s must not get in (connack %d)", name, answer(ca))
		}
	})

	t.Run("a changed password misses the cache", func(t *testing.T) {
		_, ca, err := connectV5(t, dialTCP(t, fa.mqtt), device("device-1"), nil)
		require.NoError(t, err, "connack %d", answer(ca))
		_, ca, err = connectV5(t, dialTCP(t, fa.mqtt), login("device-1b", "device-1", passwordOf["device-1"]), nil)
		require.NoError(t, err, "cached now (connack %d)", answer(ca))

		var lines []string
		for user, pw := range passwordOf {
			if user == "device-1" {
				pw = "pw-rotated"
			}
			h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
			require.NoError(t, err)
			lines = append(lines, user+":"+string(h))
		}
		kit.write(t, "passwords", strings.Join(lines, "\n")+"\n")
		c.reload(t, "credentials", "ok")
		_, ca, _ = connectV5(t, dialTCP(t, fa.mqtt), device("device-1"), nil)
		require.Equal(t, 0x86, answer(ca), "the old password, cached before, is refused")
		_, ca, err = connectV5(t, dialTCP(t, fa.mqtt), login("device-1", "device-1", "pw-rotated"), nil)
		require.NoError(t, err, "connack %d", answer(ca))
	})

	t.Run("a rules file broken on reload keeps the rules in force", func(t *testing.T) {
		kit.write(t, "rules.yaml", "rules:\n  - permission: allow\n    action: all\n    topics: [\"#\"\n")
		c.reload(t, "rules", "failed")
		cl, ca, err := connectV5(t, dialTCP(t, c.lb), login("device-1", "device-1", "pw-rotated"), nil)
		require.NoError(t, err, "connack %d", answer(ca))
		require.Equal(t, byte(0x87), suback(t, cl, "#"), "a broken file opened no door")
		require.Equal(t, byte(1), suback(t, cl, "devices/device-1/#"))
		require.Equal(t, byte(0x87), puback(t, cl, "devices/device-2/commands/x", "forged", false))
	})
}

// TestWithEveryDefaultRulesChangedOnDiskAreReloadedAndABrokenFileOpensNoDoor:
// the attacks above reload on SIGHUP; by default the frontends also look
// at the files every 10 s. An operator's edit
// on disk, no signal sent, is in force after that on every frontend; a
// file broken on disk is counted as a failed reload and keeps the rules
// in force.
func TestWithEveryDefaultRulesChangedOnDiskAreReloadedAndABrokenFileOpensNoDoor(t *testing.T) {
	t.Parallel()
	kit := newAccessKit(t)
	c := startClusterWith(t, clusterOptions{access: kit.args(), tls: true, defaults: true})
	dev := func() *v5 {
		cl, ca, err := connectV5(t, dialTCP(t, c.lb), device("device-1"), nil)
		require.NoError(t, err, "connack %d", answer(ca))
		return cl
	}
	cl := dev()
	require.Equal(t, byte(1), suback(t, cl, "devices/device-1/#"))
	require.Equal(t, byte(0x87), suback(t, cl, "#"))

	counts := func(outcome string) map[string]int {
		series := fmt.Sprintf(`fleetgate_frontend_auth_reloads_total{outcome=%q,what="rules"}`, outcome)
		out := map[string]int{}
		for _, f := range c.frontends {
			out[f.id] = reloadsIn(metricsOf(t, f.ops), series)
		}
		return out
	}
	waitMore := func(outcome string, before map[string]int) {
		t.Helper()
		require.Eventually(t, func() bool {
			now := counts(outcome)
			for id, n := range before {
				if now[id] <= n {
					return false
				}
			}
			return true
		}, 45*time.Second, 100*time.Millisecond, "not every frontend counted a %s rules reload (before: %v)", outcome, before)
	}

	// The operator narrows the devices to their telemetry.
	before := counts("ok")
	kit.write(t, "rules.yaml", strings.Replace(rulesYAML, `["devices/%u/#"]`, `["devices/%u/telemetry/#"]`, 1))
	waitMore("ok", before)
	// A connection made before the reload is judged by the new rules too.
	require.Equal(t, byte(0x87), suback(t, cl, "devices/device-1/status/#"), "the narrowed rules, on a connection older than them")
	require.Equal(t, byte(1), suback(t, cl, "devices/device-1/telemetry/a"))
	cl = dev()
	require.Equal(t, byte(0x87), suback(t, cl, "devices/device-1/#"), "the narrowed rules are in force")
	require.Equal(t, byte(1), suback(t, cl, "devices/device-1/telemetry/#"))

	// A file broken on disk keeps the narrowed rules.
	before = counts("failed")
	kit.write(t, "rules.yaml", "rules:\n  - permission: allow\n    action: all\n    topics: [\"#\"\n")
	waitMore("failed", before)
	cl = dev()
	require.Equal(t, byte(0x87), suback(t, cl, "#"), "a broken file opened no door")
	require.Equal(t, byte(0x87), suback(t, cl, "devices/device-1/#"))
	require.Equal(t, byte(1), suback(t, cl, "devices/device-1/telemetry/#"))
	require.Equal(t, byte(0x87), puback(t, cl, "devices/device-2/commands/x", "forged", false))
}

// TestWithEveryDefaultAnAuthenticatedSessionSurvivesItsFrontendsSIGKILLAndStaysItsOwners:
// the crash tests above run with anonymous clients; here a device logged
// in with its password holds a persistent session on one frontend, which
// is killed with SIGKILL. While the device is away a backend commands it,
// and another device tries to take the orphaned session over on the
// surviving frontend: it is refused (CONNACK 0x87), and the session, its
// subscription and the queued command are as they were. The device then
// resumes its session on the survivor and gets the command. Every setting
// at its default, the password file and rules as deployed.
func TestWithEveryDefaultAnAuthenticatedSessionSurvivesItsFrontendsSIGKILLAndStaysItsOwners(t *testing.T) {
	t.Parallel()
	kit := newAccessKit(t)
	c := startClusterWith(t, clusterOptions{access: kit.args(), tls: true, defaults: true})
	victimNode, survivor := c.frontends[0], c.frontends[1]
	const expiry = uint32(300)
	persistentLogin := func(clientID, user string) *paho.Connect {
		cp := login(clientID, user, passwordOf[user])
		cp.CleanStart = false
		e := expiry
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &e}
		return cp
	}
	in := newInbox()
	dev, ca, err := connectV5(t, dialTCP(t, victimNode.mqtt), persistentLogin("device-1", "device-1"), in)
	require.NoError(t, err, "connack %d", answer(ca))
	require.Equal(t, byte(1), suback(t, dev, "devices/device-1/commands/#"))
	backend, ca, err := connectV5(t, dialTCP(t, survivor.mqtt), device("backend"), nil)
	require.NoError(t, err, "connack %d", answer(ca))
	probeUntilDelivered(t, in, "devices/device-1/commands/probe", func(p string) {
		require.Zero(t, puback(t, backend, "devices/device-1/commands/probe", p, false))
	})

	// pending counts what waits for the device in Redis: its queue, and
	// what the dispatchers handed straight to its inflight window (the
	// session counts as connected until the dead node is swept).
	pending := func() int64 {
		q, err := c.redis.LLen(t.Context(), "fg:{device-1}:q").Result()
		require.NoError(t, err)
		f, err := c.redis.HLen(t.Context(), "fg:{device-1}:inflight").Result()
		require.NoError(t, err)
		return q + f
	}
	require.Eventually(t, func() bool { return pending() == 0 }, 10*time.Second, 20*time.Millisecond,
		"the probes' acknowledgements were never recorded")

	victimNode.Kill()
	select {
	case <-dev.lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the device did not notice that its frontend died")
	}
	require.Zero(t, puback(t, backend, "devices/device-1/commands/reboot", "while away", false))
	require.Eventually(t, func() bool { return pending() == 1 }, 15*time.Second, 20*time.Millisecond,
		"the command was never queued for the device")
	before, beforeSubs := c.sessionOf(t, "device-1")

	for _, clean := range []bool{false, true} {
		cp := persistentLogin("device-1", "device-2")
		cp.CleanStart = clean
		_, ca, err := connectV5(t, dialTCP(t, survivor.mqtt), cp, nil)
		require.Error(t, err)
		require.Equal(t, 0x87, answer(ca), "another identity's CONNECT for the orphaned session, clean start %t", clean)
	}
	after, afterSubs := c.sessionOf(t, "device-1")
	require.Equal(t, before.Epoch, after.Epoch, "the session was not taken over")
	require.Equal(t, beforeSubs, afterSubs, "the subscriptions were not wiped")
	require.EqualValues(t, 1, pending(), "the queued command was not taken or wiped")

	resumed, ca, err := connectV5(t, dialTCP(t, survivor.mqtt), persistentLogin("device-1", "device-1"), in)
	require.NoError(t, err, "connack %d", answer(ca))
	require.True(t, ca.SessionPresent, "the device resumes its own session on the survivor")
	require.True(t, in.waitFor(15*time.Second, func(m []received) bool { return has(m, "devices/device-1/commands/reboot", "while away") }),
		"the command queued while the device was away never arrived")
	require.Zero(t, puback(t, resumed, "devices/device-1/telemetry", "back", false))
}

// TestWithEveryDefaultAReloadRevokesCredentialsAndNarrowsWhatSubscriptionsReceive:
// an operator takes access away with SIGHUP, every setting at its default
// but a CRL file for the client certificates.
// A rule narrowed stops what a subscription granted under the old rules
// receives, on the connection that made it and after the persistent
// session resumes on the other node; a user removed from the password file
// or a JWT key rotated out, or a client certificate put on the CRL, closes
// the connections that rest on it, on both nodes, MQTT 5 and 3.1.1, and
// nobody else's.
func TestWithEveryDefaultAReloadRevokesCredentialsAndNarrowsWhatSubscriptionsReceive(t *testing.T) {
	t.Parallel()
	kit := newAccessKit(t)
	// The fleet CA's revocation list, empty for now: the one setting
	// beyond the deploy files' (they verify no client certificates).
	crl := kit.writeCRL(t, 1)
	c := startClusterWith(t, clusterOptions{access: append(kit.args(), "-auth.cert.crl-file", crl), tls: true, defaults: true})
	fa, fb := c.frontends[0], c.frontends[1]
	resumable := func(cp *paho.Connect) *paho.Connect {
		cp.CleanStart = false
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
		return cp
	}

	// The backend reads every device: persistent, on frontend A.
	backendIn := newInbox()
	backend, ca, err := connectV5(t, dialTCP(t, fa.mqtt), resumable(device("backend")), backendIn)
	require.NoError(t, err, "connack %d", answer(ca))
	backend.subscribe(t, "devices/#")
	dev1, ca, err := connectV5(t, dialTCP(t, fb.mqtt), device("device-1"), nil)
	require.NoError(t, err, "connack %d", answer(ca))
	require.Zero(t, puback(t, dev1, "devices/device-1/status", "status 0", false))
	require.True(t, backendIn.waitFor(15*time.Second, func(m []received) bool { return has(m, "devices/device-1/status", "status 0") }))

	t.Run("a narrowed rule stops what a subscription granted before receives", func(t *testing.T) {
		kit.write(t, "rules.yaml", strings.Replace(rulesYAML, `topics: ["devices/#"]`, `topics: ["devices/+/telemetry/#"]`, 1))
		c.reload(t, "rules", "ok")

		// One publisher, one partition: were the status delivered, it
		// would arrive before the telemetry that follows it.
		require.Zero(t, puback(t, dev1, "devices/device-1/status", "status 1", false))
		require.Zero(t, puback(t, dev1, "devices/device-1/telemetry/t", "telemetry 1", false))
		require.True(t, backendIn.waitFor(15*time.Second, func(m []received) bool { return has(m, "devices/device-1/telemetry/t", "telemetry 1") }))
		require.False(t, has(backendIn.snapshot(), "devices/device-1/status", "status 1"), "the subscription granted before the reload delivered a topic the rules now refuse")
		require.Equal(t, byte(0x87), suback(t, backend, "devices/#"), "nor may it subscribe so widely again")

		// Offline: the messages wait in the backend's queue, and the
		// resumed session, on the other node, gets only what it may read.
		require.NoError(t, backend.Disconnect(&paho.Disconnect{}))
		require.Eventually(t, func() bool { info, _ := c.sessionOf(t, "backend"); return !info.Connected }, 15*time.Second, 50*time.Millisecond)
		require.Zero(t, puback(t, dev1, "devices/device-1/status", "status 2", false))
		require.Zero(t, puback(t, dev1, "devices/device-1/telemetry/t", "telemetry 2", false))
		require.Eventually(t, func() bool { info, _ := c.sessionOf(t, "backend"); return info.QueuedBytes > 0 }, 15*time.Second, 50*time.Millisecond)
		_, subs := c.sessionOf(t, "backend")
		require.Equal(t, []string{"devices/#"}, subs, "the subscription granted before is still in the session")
		back := newInbox()
		_, ca, err := connectV5(t, dialTCP(t, fb.mqtt), resumable(device("backend")), back)
		require.NoError(t, err, "connack %d", answer(ca))
		require.True(t, ca.SessionPresent)
		require.True(t, back.waitFor(15*time.Second, func(m []received) bool { return has(m, "devices/device-1/telemetry/t", "telemetry 2") }))
		require.False(t, has(back.snapshot(), "devices/device-1/status", "status 2"), "the queued message on a refused topic was delivered")
		require.Eventually(t, func() bool {
			return c.sumOf(t, `fleetgate_delivery_messages_dropped_total{reason="not_authorized"}`) >= 2
		}, 15*time.Second, 100*time.Millisecond, "the discarded messages are counted")
	})

	t.Run("a removed user and a rotated key lose their connections, nobody else", func(t *testing.T) {
		dev2 := func(addr, clientID string) *v5 {
			cl, ca, err := connectV5(t, dialTCP(t, addr), login(clientID, "device-2", passwordOf["device-2"]), nil)
			require.NoError(t, err, "connack %d", answer(ca))
			return cl
		}
		dev2a, dev2b := dev2(fa.mqtt, "device-2"), dev2(fb.mqtt, "device-2-b")
		dev2v3, err := dialV3Login(t, "tcp://"+fb.mqtt, "device-2-v3", "device-2", passwordOf["device-2"], true, nil, nil)
		require.NoError(t, err)
		es, ca, err := connectV5(t, dialTCP(t, fa.mqtt), login("device-4", "", token(t, jwt.SigningMethodES256, kit.deviceKey, "device-4", time.Hour, 0)), nil)
		require.NoError(t, err, "connack %d", answer(ca))
		rs, ca, err := connectV5(t, dialTCP(t, fb.mqtt), login("device-5", "", token(t, jwt.SigningMethodRS256, kit.rsaKey, "device-5", time.Hour, 0)), nil)
		require.NoError(t, err, "connack %d", answer(ca))
		closedWith0x87 := func(cl *v5, who string) {
			t.Helper()
			select {
			case d := <-cl.disconnect:
				require.Equal(t, byte(0x87), d.ReasonCode, "%s: DISCONNECT Not authorized", who)
			case <-time.After(15 * time.Second):
				t.Fatalf("%s kept its connection after its credential was revoked", who)
			}
		}
		open := func(cl *v5, who string) {
			t.Helper()
			select {
			case <-cl.lost:
				t.Fatalf("%s lost its connection, though its credential holds", who)
			default:
			}
		}

		// device-2 is decommissioned: its line goes, the others stay as
		// they are (as htpasswd -D leaves them).
		b, err := os.ReadFile(kit.passwords)
		require.NoError(t, err)
		var kept []string
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if !strings.HasPrefix(line, "device-2:") {
				kept = append(kept, line)
			}
		}
		kit.write(t, "passwords", strings.Join(kept, "\n")+"\n")
		c.reload(t, "credentials", "ok")
		closedWith0x87(dev2a, "device-2 on "+fa.id)
		closedWith0x87(dev2b, "device-2 on "+fb.id)
		require.Eventually(t, func() bool { return !dev2v3.IsConnectionOpen() }, 15*time.Second, 50*time.Millisecond, "device-2 over MQTT 3.1.1: closed")
		open(dev1, "device-1")
		open(es, "device-4 (ES256)")
		open(rs, "device-5 (RS256)")
		require.Zero(t, puback(t, dev1, "devices/device-1/telemetry/t", "after the revocation", false))
		_, ca, _ = connectV5(t, dialTCP(t, c.lb), device("device-2"), nil)
		require.Equal(t, 0x86, answer(ca), "device-2 cannot come back")

		// The RSA key is rotated out: RS256 tokens are revoked, ES256
		// ones are not.
		newRSA, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		der, err := x509.MarshalPKIXPublicKey(&newRSA.PublicKey)
		require.NoError(t, err)
		kit.write(t, "jwt-rs.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
		c.reload(t, "credentials", "ok")
		closedWith0x87(rs, "device-5 (RS256)")
		open(es, "device-4 (ES256)")
		open(dev1, "device-1")
		require.Zero(t, puback(t, es, "devices/device-4/telemetry", "still here", false))

		require.Equal(t, 3, c.sumOf(t, `fleetgate_frontend_auth_revoked_total{source="password"}`), "device-2 on both nodes and over 3.1.1")
		require.Equal(t, 1, c.sumOf(t, `fleetgate_frontend_auth_revoked_total{source="jwt"}`))
	})

	t.Run("a client certificate put on the CRL loses its connection", func(t *testing.T) {
		conn, err := kit.dialTLS(fb.tls, &kit.device3)
		require.NoError(t, err)
		dev3, ca, err := connectV5(t, conn, &paho.Connect{ClientID: "device-3", CleanStart: true}, nil)
		require.NoError(t, err, "connack %d", answer(ca))
		require.Zero(t, puback(t, dev3, "devices/device-3/telemetry", "before", false))

		leaf, err := x509.ParseCertificate(kit.device3.Certificate[0])
		require.NoError(t, err)
		kit.writeCRL(t, 2, leaf.SerialNumber)
		c.reload(t, "credentials", "ok")
		select {
		case d := <-dev3.disconnect:
			require.Equal(t, byte(0x87), d.ReasonCode, "device-3: DISCONNECT Not authorized")
		case <-time.After(15 * time.Second):
			t.Fatal("device-3 kept its connection after its certificate was revoked")
		}
		select {
		case <-dev1.lost:
			t.Fatal("device-1 lost its connection")
		default:
		}
		conn, err = kit.dialTLS(fa.tls, &kit.device3)
		require.NoError(t, err, "the chain is still valid: the CRL is checked at CONNECT")
		_, ca, _ = connectV5(t, conn, &paho.Connect{ClientID: "device-3", CleanStart: true}, nil)
		require.Equal(t, 0x87, answer(ca), "device-3 cannot come back")
		require.Equal(t, 1, c.sumOf(t, `fleetgate_frontend_auth_revoked_total{source="cert"}`))
		require.Equal(t, 1, c.sumOf(t, `fleetgate_frontend_auth_failures_total{reason="cert_revoked"}`))
	})
}
