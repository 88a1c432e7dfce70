package auth

import (
	"crypto/rand"
	"errors"
	"strings"
	"time"
)

// method is one way of authenticating. applies says whether the request
// carries its kind of credential; if so, authenticate decides.
type method interface {
	applies(r *Request) bool
	authenticate(r *Request) (Identity, error)
}

// Chain authenticates CONNECTs with the configured methods, in order: the
// first method that applies decides; when none applies the client is
// anonymous, if allowed. It is safe for concurrent use, also with Load.
type Chain struct {
	methods        []method
	names          []string
	allowAnonymous bool
	clientIDPolicy string
	passwords      *passwords // nil unless configured
	tokens         *tokens    // nil unless configured
	certs          *certs     // nil unless configured
}

// Option configures a Chain beyond its Config.
type Option func(*options)

type options struct {
	now func() time.Time
}

// WithClock sets the clock of token expiry and throttle windows; the
// default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// New builds a Chain from cfg. It does no I/O: call Load before the first
// Authenticate (until then every password and token is refused).
func New(cfg Config, opts ...Option) (*Chain, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.Resolve(false)
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	c := &Chain{allowAnonymous: cfg.AllowAnonymous, clientIDPolicy: cfg.ClientIDPolicy}
	for _, name := range cfg.Methods {
		var m method
		switch name {
		case SourcePassword:
			key := make([]byte, 32)
			_, _ = rand.Read(key) // never fails (crypto/rand)
			c.passwords = newPasswords(&cfg, key, o.now)
			m = c.passwords
		case SourceJWT:
			c.tokens = newTokens(&cfg, o.now)
			m = c.tokens
		case SourceCert:
			c.certs = &certs{field: cfg.Cert.Identity, crlFile: cfg.Cert.CRLFile, caFile: cfg.Cert.CAFile}
			m = c.certs
		}
		c.methods = append(c.methods, m)
		c.names = append(c.names, name)
	}
	return c, nil
}

// Load reads the password file, the JWT keys and the CRL; call it again to reload
// them (on SIGHUP, or when the files change). Each source is replaced only
// when it loads whole: a reload that fails keeps the previous users or keys
// and returns the error, so a broken file never opens the door.
func (c *Chain) Load() error {
	var errs []error
	if c.passwords != nil {
		errs = append(errs, c.passwords.load())
	}
	if c.tokens != nil {
		errs = append(errs, c.tokens.load())
	}
	if c.certs != nil {
		errs = append(errs, c.certs.load())
	}
	return errors.Join(errs...)
}

// Methods returns the configured method names in the order they are tried.
func (c *Chain) Methods() []string { return append([]string(nil), c.names...) }

// Authenticate decides who r is. It returns the Identity, or a *Failure
// that says why not and which CONNACK answer that means. Checking a
// password not verified before costs a bcrypt comparison; everything else
// is cheap.
func (c *Chain) Authenticate(r Request) (Identity, error) {
	for _, m := range c.methods {
		if !m.applies(&r) {
			continue
		}
		id, err := m.authenticate(&r)
		if err != nil {
			return Identity{}, err
		}
		if err := c.checkClientID(r.ClientID, id); err != nil {
			return Identity{}, err
		}
		return id, nil
	}
	switch {
	case c.allowAnonymous:
		return Identity{Source: SourceAnonymous}, nil
	case r.anonymous():
		return Identity{}, fail("", ReasonAnonymousRefused, "")
	default:
		return Identity{}, fail("", ReasonNoCredentials, "no configured method ("+strings.Join(c.names, ",")+") applies")
	}
}

// checkClientID applies auth.client-id-policy. An empty client id breaks
// equal and prefix: the server would assign one that does not match.
func (c *Chain) checkClientID(clientID string, id Identity) error {
	switch c.clientIDPolicy {
	case ClientIDEqual:
		if clientID != id.Name {
			return fail(id.Source, ReasonClientIDMismatch, "client id is not the identity (auth.client-id-policy=equal)")
		}
	case ClientIDPrefix:
		if !strings.HasPrefix(clientID, id.Name) || clientID == "" {
			return fail(id.Source, ReasonClientIDMismatch, "client id does not start with the identity (auth.client-id-policy=prefix)")
		}
	}
	return nil
}
