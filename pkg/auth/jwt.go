package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokens verifies JWTs presented as the CONNECT password.
type tokens struct {
	cfg    JWTConfig
	parser *jwt.Parser
	keys   atomic.Pointer[[]verifyKey]
	now    func() time.Time

	// verified remembers tokens whose signature and claims checked out,
	// by a hash of the token, so that a device reconnecting with the same
	// token costs a hash and a lookup, not a signature verification (an
	// ES256 verification is about 80 µs of CPU, the claims' JSON as much
	// again). An entry holds for the keys it was verified with (a reload
	// misses) and is checked against the clock on every use.
	mu       sync.Mutex
	verified *lru[[32]byte, verifiedToken]
}

// verifiedToken is what a verified token established: 56 bytes, since a
// fleet's every device has one (a slot of 96 with its key and links).
type verifiedToken struct {
	keys *[]verifyKey // the key set that verified it
	name string       // the identity
	fp   uint64       // the fingerprint of the key that verified it (Credential)
	// expires and notBefore are the token's exp and nbf in Unix
	// nanoseconds, 0 when absent.
	expires, notBefore int64
	// claims holds what few tokens carry, nil when none does.
	claims *tokenClaims
}

// tokenClaims are a verified token's optional claims.
type tokenClaims struct {
	groups []string
	rules  []byte
	// boundClientID is the client id claim's value (auth.jwt.client-id-claim).
	boundClientID string
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// timeOf is the time of unixNano's n: the zero time for 0.
func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// identity is the identity v established, with claims of its own.
func (v *verifiedToken) identity() Identity {
	id := Identity{Name: v.name, Source: SourceJWT, Expires: timeOf(v.expires), Credential: Credential{kind: credJWT, fp: v.fp}}
	if v.claims != nil {
		id.Groups, id.Rules = slices.Clone(v.claims.groups), slices.Clone(v.claims.rules)
	}
	return id
}

// boundClientID is the client id claim's value, empty without one.
func (v *verifiedToken) boundClientID() string {
	if v.claims == nil {
		return ""
	}
	return v.claims.boundClientID
}

func newTokens(cfg *Config, now func() time.Time) *tokens {
	opts := []jwt.ParserOption{
		jwt.WithLeeway(cfg.JWT.Leeway),
		jwt.WithTimeFunc(now),
		// Refuse non-canonical base64 (trailing bits set): one token,
		// one spelling.
		jwt.WithStrictDecoding(),
	}
	if cfg.JWT.RequireExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.JWT.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.JWT.Issuer))
	}
	if cfg.JWT.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWT.Audience))
	}
	t := &tokens{cfg: cfg.JWT, parser: jwt.NewParser(opts...), now: now}
	if cfg.JWT.CacheSize > 0 {
		t.verified = newLRU[[32]byte, verifiedToken](cfg.JWT.CacheSize)
	}
	return t
}

// load reads the keys; on error the previous keys stay.
func (t *tokens) load() error {
	keys, err := loadKeys(&t.cfg)
	if err != nil {
		return err
	}
	t.keys.Store(&keys)
	return nil
}

// applies reports whether the password is a compact JWS: three base64url
// segments whose first decodes to a JSON object with a string alg. A
// password that merely has two dots is not one, and is left to the
// password method. An unsigned token (alg none, empty signature) is one,
// so that it is refused rather than passed on. A token in the cache of
// verified ones applies without decoding its header again.
func (t *tokens) applies(r *Request) bool {
	p := r.Password
	if bytes.Count(p, []byte(".")) != 2 {
		return false
	}
	if t.verified != nil {
		t.digest(r)
		t.mu.Lock()
		_, ok := t.verified.get(r.digest)
		t.mu.Unlock()
		if ok {
			return true
		}
	}
	for _, c := range p {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	head, _, _ := bytes.Cut(p, []byte("."))
	raw, err := base64.RawURLEncoding.DecodeString(string(head))
	if err != nil {
		return false
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	return json.Unmarshal(raw, &h) == nil && h.Alg != nil
}

// digest returns the SHA-256 of r's password, the key of the verified
// tokens' cache, computed once per request.
func (t *tokens) digest(r *Request) [32]byte {
	if !r.digested {
		r.digest, r.digested = sha256.Sum256(r.Password), true
	}
	return r.digest
}

// The keyfunc's refusals, told apart from a bad signature.
var (
	errAlgorithm  = errors.New("alg not accepted by any configured key")
	errUnknownKey = errors.New("no key of the token's alg has its kid")
	errCritical   = errors.New("critical header extension not understood")
	errKid        = errors.New("kid is not a string")
)

// claims decodes the registered claims for the parser's checks and keeps
// every claim raw for the configured ones.
type claims struct {
	jwt.RegisteredClaims
	raw map[string]json.RawMessage
}

func (c *claims) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &c.raw); err != nil {
		return err
	}
	return json.Unmarshal(b, &c.RegisteredClaims)
}

func (t *tokens) authenticate(r *Request) (Identity, error) {
	keySet := t.keys.Load()
	var key [32]byte
	if t.verified != nil {
		key = t.digest(r)
		t.mu.Lock()
		v, ok := t.verified.get(key)
		t.mu.Unlock()
		if ok && v.keys == keySet && t.current(v) {
			if t.cfg.ClientIDClaim != "" && v.boundClientID() != r.ClientID {
				return Identity{}, fail(SourceJWT, ReasonClientIDMismatch, fmt.Sprintf("client id is not the token's %q claim", t.cfg.ClientIDClaim))
			}
			return v.identity(), nil
		}
	}
	var keys []verifyKey
	if keySet != nil {
		keys = *keySet
	}
	var c claims
	var cands []verifyKey
	tok, err := t.parser.ParseWithClaims(string(r.Password), &c, func(tok *jwt.Token) (any, error) {
		var err error
		if cands, err = selectKeys(keys, tok); err != nil {
			return nil, err
		}
		set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(cands))}
		for i, k := range cands {
			set.Keys[i] = k.key
		}
		return set, nil
	})
	if err != nil {
		reason, detail := classify(err)
		return Identity{}, fail(SourceJWT, reason, detail)
	}

	id := Identity{Source: SourceJWT, Credential: Credential{kind: credJWT, fp: verifiedBy(tok, string(r.Password), cands).fp}}
	if err := claimString(c.raw, t.cfg.IdentityClaim, &id.Name); err != nil || id.Name == "" {
		return Identity{}, fail(SourceJWT, ReasonTokenClaims, fmt.Sprintf("identity claim %q missing, empty or not a string", t.cfg.IdentityClaim))
	}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	if t.cfg.ClientIDClaim != "" {
		var bound string
		if err := claimString(c.raw, t.cfg.ClientIDClaim, &bound); err != nil || bound == "" {
			return Identity{}, fail(SourceJWT, ReasonTokenClaims, fmt.Sprintf("client id claim %q missing, empty or not a string", t.cfg.ClientIDClaim))
		}
		if bound != r.ClientID {
			return Identity{}, fail(SourceJWT, ReasonClientIDMismatch, fmt.Sprintf("client id is not the token's %q claim", t.cfg.ClientIDClaim))
		}
	}
	if t.cfg.GroupsClaim != "" {
		if raw, ok := c.raw[t.cfg.GroupsClaim]; ok && !isNull(raw) {
			var one string
			if json.Unmarshal(raw, &id.Groups) != nil {
				if json.Unmarshal(raw, &one) != nil {
					return Identity{}, fail(SourceJWT, ReasonTokenClaims, fmt.Sprintf("groups claim %q is neither an array of strings nor a string", t.cfg.GroupsClaim))
				}
				id.Groups = []string{one}
			}
		}
	}
	if t.cfg.RulesClaim != "" {
		if raw, ok := c.raw[t.cfg.RulesClaim]; ok && !isNull(raw) {
			id.Rules = slices.Clone(raw)
		}
	}
	if t.verified != nil {
		v := verifiedToken{keys: keySet, name: id.Name, fp: id.Credential.fp, expires: unixNano(id.Expires)}
		if c.NotBefore != nil {
			v.notBefore = unixNano(c.NotBefore.Time)
		}
		if len(id.Groups) > 0 || len(id.Rules) > 0 || t.cfg.ClientIDClaim != "" {
			v.claims = &tokenClaims{groups: slices.Clone(id.Groups), rules: slices.Clone(id.Rules)}
			if t.cfg.ClientIDClaim != "" {
				v.claims.boundClientID = r.ClientID // checked equal above
			}
		}
		t.mu.Lock()
		t.verified.put(key, v)
		t.mu.Unlock()
	}
	return id, nil
}

// current reports whether a verified token is still within its nbf and
// exp, with the configured leeway, as the parser checks them.
func (t *tokens) current(v verifiedToken) bool {
	now := t.now()
	if v.expires != 0 && !now.Before(timeOf(v.expires).Add(t.cfg.Leeway)) {
		return false
	}
	return v.notBefore == 0 || !now.Before(timeOf(v.notBefore).Add(-t.cfg.Leeway))
}

// selectKeys returns the keys that may verify tok: those pinned to its alg
// whose kid is the token's, or which have none. An alg no key is pinned to
// (none, an unknown one, HS256 when only public keys are configured) is
// refused before any verification.
func selectKeys(keys []verifyKey, tok *jwt.Token) ([]verifyKey, error) {
	if crit, ok := tok.Header["crit"]; ok && crit != nil {
		return nil, errCritical
	}
	kid, hasKid := "", false
	if v, ok := tok.Header["kid"]; ok {
		s, isString := v.(string)
		if !isString {
			return nil, errKid
		}
		kid, hasKid = s, true
	}
	alg := tok.Method.Alg()
	var cands []verifyKey
	algKnown := false
	for _, k := range keys {
		if !slices.Contains(k.algs, alg) {
			continue
		}
		algKnown = true
		if hasKid && k.kid != "" && k.kid != kid {
			continue
		}
		cands = append(cands, k)
	}
	switch {
	case !algKnown:
		return nil, errAlgorithm
	case len(cands) == 0:
		return nil, errUnknownKey
	}
	return cands, nil
}

// verifiedBy returns the key of cands that verified tok, whose compact
// form is raw: the only candidate, or among several (keys of one alg
// without a kid to tell them apart) the one whose signature check passes
// again. The parser tried them in order; so does this.
func verifiedBy(tok *jwt.Token, raw string, cands []verifyKey) verifyKey {
	if len(cands) == 1 {
		return cands[0]
	}
	signed := raw[:strings.LastIndexByte(raw, '.')]
	for _, k := range cands {
		if tok.Method.Verify(signed, tok.Signature, k.key) == nil {
			return k
		}
	}
	return verifyKey{} // not reached: the parser found one
}

// holds reports whether a key whose fingerprint is fp is configured now.
func (t *tokens) holds(fp uint64) bool {
	keys := t.keys.Load()
	if keys == nil {
		return false
	}
	for _, k := range *keys {
		if k.fp == fp {
			return true
		}
	}
	return false
}

// classify turns a parser error into a reason and a detail of this
// package's own words: the parser's messages may quote the token.
func classify(err error) (Reason, string) {
	switch {
	case errors.Is(err, errAlgorithm):
		return ReasonTokenAlgorithm, errAlgorithm.Error()
	case errors.Is(err, errUnknownKey):
		return ReasonTokenUnknownKey, errUnknownKey.Error()
	case errors.Is(err, errCritical):
		return ReasonTokenMalformed, errCritical.Error()
	case errors.Is(err, errKid):
		return ReasonTokenMalformed, errKid.Error()
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonTokenMalformed, "does not decode"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// alg names no algorithm the library has.
		return ReasonTokenAlgorithm, "unknown alg"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ReasonTokenBadSignature, "no configured key verifies the signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonTokenExpired, ""
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ReasonTokenNotYetValid, ""
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return ReasonTokenClaims, "required claim (exp) missing"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ReasonTokenClaims, "issuer not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ReasonTokenClaims, "audience not accepted"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ReasonTokenClaims, "issued in the future"
	}
	return ReasonTokenClaims, "claims not valid"
}

// claimString decodes the string claim name into s.
func claimString(raw map[string]json.RawMessage, name string, s *string) error {
	v, ok := raw[name]
	if !ok || isNull(v) {
		return errors.New("missing")
	}
	return json.Unmarshal(v, s)
}

func isNull(raw json.RawMessage) bool {
	return strings.TrimSpace(string(raw)) == "null"
}
