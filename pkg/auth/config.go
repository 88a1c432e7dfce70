package auth

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// The client-id policies of auth.client-id-policy.
const (
	// ClientIDAny accepts any client id.
	ClientIDAny = "any"
	// ClientIDEqual requires the client id to be the identity's name.
	ClientIDEqual = "equal"
	// ClientIDPrefix requires the client id to start with the identity's
	// name (the AWS IoT convention of thing name plus suffix).
	ClientIDPrefix = "prefix"
)

// The fields of a certificate auth.cert.identity may name.
const (
	CertCN    = "cn"
	CertDNS   = "dns"
	CertEmail = "email"
	CertURI   = "uri"
)

// Config configures who may connect. Its yaml keys mirror the flag names
// under "auth." with dashes as underscores.
type Config struct {
	// Methods are the authentication methods in the order they are tried:
	// password, jwt, cert. The first that applies to a CONNECT decides.
	Methods config.StringList `yaml:"methods"`
	// AllowAnonymous accepts a CONNECT to which no method applies.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// ClientIDPolicy binds the client id to the identity: any, equal or
	// prefix.
	ClientIDPolicy string `yaml:"client_id_policy"`
	// PasswordFile holds username:bcrypt-hash lines (htpasswd -B).
	PasswordFile string `yaml:"password_file"`
	// PasswordCacheSize bounds the verified passwords kept in memory so
	// that a reconnect costs no bcrypt; 0 disables the cache.
	PasswordCacheSize int `yaml:"password_cache_size"`
	// PasswordChecks bounds the bcrypt comparisons running at once; 0
	// means half the cores the process may use, at least 1.
	PasswordChecks int            `yaml:"password_checks"`
	Throttle       ThrottleConfig `yaml:"throttle"`
	JWT            JWTConfig      `yaml:"jwt"`
	Cert           CertConfig     `yaml:"cert"`
}

// ThrottleConfig bounds password guessing: after so many failures within
// Window, further attempts for that username or from that address are
// refused without checking the password until the window ends.
type ThrottleConfig struct {
	UserFailures    int           `yaml:"user_failures"`
	AddressFailures int           `yaml:"address_failures"`
	Window          time.Duration `yaml:"window"`
	// MaxEntries bounds the usernames and the addresses tracked (each);
	// beyond it the least recently failed are forgotten.
	MaxEntries int `yaml:"max_entries"`
}

// JWTConfig configures JWTs presented as the CONNECT password.
type JWTConfig struct {
	// KeyFiles are PEM files of public keys (PKIX or PKCS#1) or
	// certificates; each may hold several.
	KeyFiles config.StringList `yaml:"key_files"`
	// JWKSFile is a JSON Web Key Set; its keys are selected by kid.
	JWKSFile string `yaml:"jwks_file"`
	// HMACSecretFile holds the HS256/384/512 secret (at least 32 bytes;
	// a trailing newline is dropped).
	HMACSecretFile string `yaml:"hmac_secret_file"`
	// Issuer and Audience, when set, must be the token's iss and among its
	// aud.
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	// Leeway is the clock skew allowed on exp and nbf.
	Leeway time.Duration `yaml:"leeway"`
	// RequireExp refuses tokens without exp.
	RequireExp bool `yaml:"require_exp"`
	// IdentityClaim names the claim that holds the identity.
	IdentityClaim string `yaml:"identity_claim"`
	// ClientIDClaim, when set, names a claim the client id must equal.
	ClientIDClaim string `yaml:"client_id_claim"`
	// GroupsClaim, when set, names a claim of groups (array of strings or
	// one string).
	GroupsClaim string `yaml:"groups_claim"`
	// RulesClaim, when set, names a claim whose raw JSON is handed on as
	// Identity.Rules.
	RulesClaim string `yaml:"rules_claim"`
	// CacheSize bounds the verified tokens remembered; 0 disables.
	CacheSize int `yaml:"cache_size"`
}

// CertConfig configures identities from client certificates.
type CertConfig struct {
	// Identity is the certificate field that names the client: cn, or the
	// first subject alternative name of kind dns, email or uri.
	Identity string `yaml:"identity"`
	// CRLFile holds the certificate revocation lists of the client CA
	// (PEM or DER); a certificate on them is refused, and a reload closes
	// the connections of certificates newly on them.
	CRLFile string `yaml:"crl_file"`
	// CAFile is the client CA file that must have signed the CRLs: the
	// frontend sets it from mqtt.tls-client-ca-file.
	CAFile string `yaml:"-"`
}

// RegisterFlags registers the flags under "auth.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(&c.Methods, "auth.methods", "Authentication methods in the order they are tried, comma-separated: password, jwt, cert. The first that applies to a CONNECT decides: cert when the client presented a verified certificate, jwt when the password is a compact JWS, password when a username is set. Empty (the default): every method whose credentials are configured, in the order cert, jwt, password.")
	fs.BoolVar(&c.AllowAnonymous, "auth.allow-anonymous", false, "Accept a CONNECT to which no method applies, as an anonymous identity. Otherwise it gets CONNACK not authorized (0x87 / 0x05).")
	fs.StringVar(&c.ClientIDPolicy, "auth.client-id-policy", ClientIDAny, "How the client id must relate to the identity: any; equal (client id = identity); prefix (client id starts with the identity; safe only when no identity is a prefix of another). A violation gets CONNACK 0x85 / 0x02. Anonymous clients are exempt.")
	fs.StringVar(&c.PasswordFile, "auth.password-file", "", "File of username:bcrypt-hash lines (htpasswd -B format); needed by the password method.")
	fs.IntVar(&c.PasswordCacheSize, "auth.password-cache-size", 100000, "Verified passwords remembered (as keyed hashes, never the password) so that a reconnect costs no bcrypt; about 110 bytes each. A changed password or hash misses. 0 disables.")
	fs.IntVar(&c.PasswordChecks, "auth.password-checks", 0, "Bcrypt comparisons running at once (each costs tens of ms of a core); further uncached CONNECTs wait for one to end, so that a storm of new devices leaves the node's cores to its connections, Kafka and Redis. Cached passwords never wait. 0: half the cores GOMAXPROCS allows, at least 1.")
	fs.IntVar(&c.Throttle.UserFailures, "auth.throttle.user-failures", 5, "Failed password checks for one username within auth.throttle.window after which its attempts are refused (CONNACK 0x9F / 0x03) without checking. 0 disables.")
	fs.IntVar(&c.Throttle.AddressFailures, "auth.throttle.address-failures", 0, "Failed password checks from one source address (IPv6: its /64) within auth.throttle.window after which its attempts are refused without checking. 0 disables; keep it 0 behind a load balancer that hides client addresses (HAProxy without the PROXY protocol), where all clients share one.")
	fs.DurationVar(&c.Throttle.Window, "auth.throttle.window", time.Minute, "Window over which password failures are counted, and how long a throttled username or address waits.")
	fs.IntVar(&c.Throttle.MaxEntries, "auth.throttle.max-entries", 100000, "Usernames, and addresses, whose failures are tracked (each); beyond it the least recently failed are forgotten, so an attacker cycling names or addresses cannot grow memory. About 130 bytes each.")
	fs.Var(&c.JWT.KeyFiles, "auth.jwt.key-files", "PEM files of public keys or certificates that verify JWTs (RS*, PS*, ES*, EdDSA), comma-separated.")
	fs.StringVar(&c.JWT.JWKSFile, "auth.jwt.jwks-file", "", "JSON Web Key Set file of keys that verify JWTs, selected by the token's kid.")
	fs.StringVar(&c.JWT.HMACSecretFile, "auth.jwt.hmac-secret-file", "", "File holding the HS256/HS384/HS512 secret, at least 32 bytes (a trailing newline is dropped).")
	fs.StringVar(&c.JWT.Issuer, "auth.jwt.issuer", "", "When set, a JWT's iss must equal it.")
	fs.StringVar(&c.JWT.Audience, "auth.jwt.audience", "", "When set, a JWT's aud must contain it.")
	fs.DurationVar(&c.JWT.Leeway, "auth.jwt.leeway", 30*time.Second, "Clock skew allowed when checking a JWT's exp and nbf.")
	fs.BoolVar(&c.JWT.RequireExp, "auth.jwt.require-exp", true, "Refuse JWTs without an exp claim.")
	fs.IntVar(&c.JWT.CacheSize, "auth.jwt.cache-size", 100000, "Verified tokens remembered (by a SHA-256 of the token, with the identity and claims they established) so that a device reconnecting with the same token costs no signature verification; about 250 bytes each plus the groups and rules claims. exp and nbf are checked on every use; a reload of the keys empties it. 0 disables.")
	fs.StringVar(&c.JWT.IdentityClaim, "auth.jwt.identity-claim", "sub", "JWT claim (a string) that holds the identity.")
	fs.StringVar(&c.JWT.ClientIDClaim, "auth.jwt.client-id-claim", "", "When set, JWT claim the client id must equal (CONNACK 0x85 / 0x02 otherwise); a token without it is refused.")
	fs.StringVar(&c.JWT.GroupsClaim, "auth.jwt.groups-claim", "", "When set, JWT claim holding the identity's groups: an array of strings or one string.")
	fs.StringVar(&c.JWT.RulesClaim, "auth.jwt.rules-claim", "", "When set, JWT claim holding the token's own access rules, handed to the ACL as raw JSON.")
	fs.StringVar(&c.Cert.CRLFile, "auth.cert.crl-file", "", "Certificate revocation lists of the client CA (PEM X509 CRL blocks, or DER), signed by a certificate of mqtt.tls-client-ca-file: a client certificate on them is refused (CONNACK 0x87 / 0x05), and a reload (SIGHUP, or the file changing) closes the connections of certificates newly on them. fleetgate does not fetch lists; whatever publishes them replaces the file.")
	fs.StringVar(&c.Cert.Identity, "auth.cert.identity", CertCN, "Field of the verified client certificate that names the client: cn, or the first subject alternative name of kind dns, email or uri.")
}

// Resolve fills an empty Methods (Validate and New resolve a copy without
// client certificates when the caller did not) with every method whose credentials are
// configured, in the order cert, jwt, password: cert when the listener
// verifies client certificates (clientCertificates), jwt when a key is
// set, password when a password file is. Call it before Validate.
func (c *Config) Resolve(clientCertificates bool) {
	if len(c.Methods) > 0 {
		return
	}
	if clientCertificates {
		c.Methods = append(c.Methods, SourceCert)
	}
	if len(c.JWT.KeyFiles) > 0 || c.JWT.JWKSFile != "" || c.JWT.HMACSecretFile != "" {
		c.Methods = append(c.Methods, SourceJWT)
	}
	if c.PasswordFile != "" {
		c.Methods = append(c.Methods, SourcePassword)
	}
}

// Validate checks the configuration and names the bad field. It checks that
// the files it names exist; Chain.Load reads them.
func (c *Config) Validate() error {
	errs := []error{c.check()}
	j := &c.JWT
	files := []struct{ flag, path string }{{"auth.password-file", c.PasswordFile}, {"auth.jwt.jwks-file", j.JWKSFile}, {"auth.jwt.hmac-secret-file", j.HMACSecretFile}, {"auth.cert.crl-file", c.Cert.CRLFile}}
	for _, f := range j.KeyFiles {
		files = append(files, struct{ flag, path string }{"auth.jwt.key-files", f})
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		}
	}
	return errors.Join(errs...)
}

// check is Validate without the file system.
func (c *Config) check() error {
	if len(c.Methods) == 0 {
		r := *c
		r.Resolve(false)
		c = &r
	}
	var errs []error
	seen := map[string]bool{}
	for _, m := range c.Methods {
		switch {
		case !slices.Contains([]string{SourcePassword, SourceJWT, SourceCert}, m):
			errs = append(errs, fmt.Errorf("auth.methods: unknown method %q (want password, jwt or cert)", m))
		case seen[m]:
			errs = append(errs, fmt.Errorf("auth.methods: %s listed twice", m))
		}
		seen[m] = true
	}
	if len(c.Methods) == 0 && !c.AllowAnonymous {
		errs = append(errs, errors.New("auth.methods: no authentication method is configured (auth.password-file, auth.jwt.key-files, auth.jwt.jwks-file, auth.jwt.hmac-secret-file, or mqtt.tls-client-ca-file for client certificates), so every client would be refused; configure one, or set auth.allow-anonymous=true to accept clients without credentials on purpose"))
	}
	if !slices.Contains([]string{ClientIDAny, ClientIDEqual, ClientIDPrefix}, c.ClientIDPolicy) {
		errs = append(errs, fmt.Errorf("auth.client-id-policy: %q is not any, equal or prefix", c.ClientIDPolicy))
	}

	if seen[SourcePassword] && c.PasswordFile == "" {
		errs = append(errs, errors.New("auth.password-file: must be set when auth.methods lists password"))
	}
	if !seen[SourcePassword] && c.PasswordFile != "" {
		errs = append(errs, errors.New("auth.password-file: set, but auth.methods does not list password"))
	}
	if c.PasswordCacheSize < 0 {
		errs = append(errs, fmt.Errorf("auth.password-cache-size: %d must not be negative", c.PasswordCacheSize))
	}
	if c.JWT.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("auth.jwt.cache-size: %d must not be negative", c.JWT.CacheSize))
	}
	if c.PasswordChecks < 0 {
		errs = append(errs, fmt.Errorf("auth.password-checks: %d must not be negative", c.PasswordChecks))
	}
	if c.Throttle.UserFailures < 0 {
		errs = append(errs, fmt.Errorf("auth.throttle.user-failures: %d must not be negative", c.Throttle.UserFailures))
	}
	if c.Throttle.AddressFailures < 0 {
		errs = append(errs, fmt.Errorf("auth.throttle.address-failures: %d must not be negative", c.Throttle.AddressFailures))
	}
	if c.Throttle.Window <= 0 {
		errs = append(errs, fmt.Errorf("auth.throttle.window: %s must be positive", c.Throttle.Window))
	}
	if c.Throttle.MaxEntries < 1 {
		errs = append(errs, fmt.Errorf("auth.throttle.max-entries: %d must be at least 1", c.Throttle.MaxEntries))
	}

	j := &c.JWT
	hasKeys := len(j.KeyFiles) > 0 || j.JWKSFile != "" || j.HMACSecretFile != ""
	if seen[SourceJWT] && !hasKeys {
		errs = append(errs, errors.New("auth.jwt.key-files: auth.methods lists jwt but none of auth.jwt.key-files, auth.jwt.jwks-file, auth.jwt.hmac-secret-file is set"))
	}
	if !seen[SourceJWT] && hasKeys {
		errs = append(errs, errors.New("auth.jwt.key-files: JWT keys are set, but auth.methods does not list jwt"))
	}
	if j.Leeway < 0 || j.Leeway > time.Hour {
		errs = append(errs, fmt.Errorf("auth.jwt.leeway: %s must be between 0 and 1h", j.Leeway))
	}
	if seen[SourceJWT] && j.IdentityClaim == "" {
		errs = append(errs, errors.New("auth.jwt.identity-claim: must not be empty"))
	}
	if !slices.Contains([]string{CertCN, CertDNS, CertEmail, CertURI}, c.Cert.Identity) {
		errs = append(errs, fmt.Errorf("auth.cert.identity: %q is not cn, dns, email or uri", c.Cert.Identity))
	}
	if c.Cert.CRLFile != "" && (!seen[SourceCert] || c.Cert.CAFile == "") {
		errs = append(errs, errors.New("auth.cert.crl-file: set, but no client certificates are verified: it needs mqtt.tls-client-ca-file, the CA whose lists they are, and the cert method"))
	}
	return errors.Join(errs...)
}
