package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokens verifies JWTs presented as the CONNECT password.
type tokens struct {
	cfg    JWTConfig
	parser *jwt.Parser
	keys   atomic.Pointer[[]verifyKey]
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
	return &tokens{cfg: cfg.JWT, parser: jwt.NewParser(opts...)}
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
// so that it is refused rather than passed on.
func (t *tokens) applies(r *Request) bool {
	p := r.Password
	if bytes.Count(p, []byte(".")) != 2 {
		return false
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
	var keys []verifyKey
	if k := t.keys.Load(); k != nil {
		keys = *k
	}
	var c claims
	_, err := t.parser.ParseWithClaims(string(r.Password), &c, func(tok *jwt.Token) (any, error) {
		return selectKeys(keys, tok)
	})
	if err != nil {
		reason, detail := classify(err)
		return Identity{}, fail(SourceJWT, reason, detail)
	}

	id := Identity{Source: SourceJWT}
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
	return id, nil
}

// selectKeys returns the keys that may verify tok: those pinned to its alg
// whose kid is the token's, or which have none. An alg no key is pinned to
// (none, an unknown one, HS256 when only public keys are configured) is
// refused before any verification.
func selectKeys(keys []verifyKey, tok *jwt.Token) (any, error) {
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
	var set jwt.VerificationKeySet
	algKnown := false
	for _, k := range keys {
		if !slices.Contains(k.algs, alg) {
			continue
		}
		algKnown = true
		if hasKid && k.kid != "" && k.kid != kid {
			continue
		}
		set.Keys = append(set.Keys, k.key)
	}
	switch {
	case !algKnown:
		return nil, errAlgorithm
	case len(set.Keys) == 0:
		return nil, errUnknownKey
	}
	return set, nil
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
