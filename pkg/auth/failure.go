package auth

import (
	"errors"
	"log/slog"
)

// Reason says in a word why a CONNECT was refused. The set is fixed (the
// constants below), so it is safe as a metric label and in logs; it never
// carries a credential.
type Reason string

// The reasons a Chain refuses a CONNECT.
const (
	// ReasonUnknownUser: the username is not in the password file.
	ReasonUnknownUser Reason = "unknown_user"
	// ReasonWrongPassword: the password does not match the user's hash.
	ReasonWrongPassword Reason = "wrong_password"
	// ReasonThrottled: too many recent failures for this username or source
	// address; the password was not checked.
	ReasonThrottled Reason = "throttled"
	// ReasonTokenMalformed: the JWT does not decode, or carries a critical
	// header extension this package does not understand (RFC 7515 4.1.11).
	ReasonTokenMalformed Reason = "token_malformed"
	// ReasonTokenBadSignature: no configured key verifies the signature.
	ReasonTokenBadSignature Reason = "token_bad_signature"
	// ReasonTokenUnknownKey: the token names a kid that no configured key
	// of its algorithm has.
	ReasonTokenUnknownKey Reason = "token_unknown_key"
	// ReasonTokenAlgorithm: the token's alg is none, unknown, or not the
	// algorithm of any configured key (HS/RS confusion lands here).
	ReasonTokenAlgorithm Reason = "token_algorithm"
	// ReasonTokenExpired: exp is past, beyond the leeway.
	ReasonTokenExpired Reason = "token_expired"
	// ReasonTokenNotYetValid: nbf is ahead, beyond the leeway.
	ReasonTokenNotYetValid Reason = "token_not_yet_valid"
	// ReasonTokenClaims: a required claim is missing or has the wrong type,
	// or iss or aud is not the configured one.
	ReasonTokenClaims Reason = "token_claims"
	// ReasonClientIDMismatch: the client id is not the one the token binds
	// it to, or breaks auth.client-id-policy.
	ReasonClientIDMismatch Reason = "client_id_mismatch"
	// ReasonNoCredentials: the client sent credentials that no configured
	// method applies to (say a password without a username, or a password
	// that is no JWT when only jwt is configured), and anonymous clients are
	// not allowed.
	ReasonNoCredentials Reason = "no_credentials"
	// ReasonAnonymousRefused: the client sent no username, no password and
	// no certificate, and anonymous clients are not allowed.
	ReasonAnonymousRefused Reason = "anonymous_refused"
	// ReasonCertNoIdentity: the client certificate has no field of the kind
	// auth.cert.identity names.
	ReasonCertNoIdentity Reason = "cert_no_identity"
	// ReasonCertRevoked: the client certificate is on the CRL
	// (auth.cert.crl-file).
	ReasonCertRevoked Reason = "cert_revoked"
)

// Reasons lists every Reason, for metrics that want their label values
// known up front.
var Reasons = []Reason{
	ReasonUnknownUser, ReasonWrongPassword, ReasonThrottled,
	ReasonTokenMalformed, ReasonTokenBadSignature, ReasonTokenUnknownKey, ReasonTokenAlgorithm,
	ReasonTokenExpired, ReasonTokenNotYetValid, ReasonTokenClaims,
	ReasonClientIDMismatch, ReasonNoCredentials, ReasonAnonymousRefused, ReasonCertNoIdentity, ReasonCertRevoked,
}

// Code is the kind of CONNACK answer a Failure means; Byte gives the reason
// code (MQTT 5) or return code (MQTT 3.1.1) for a protocol version.
type Code uint8

// The CONNACK answers of a refused CONNECT.
const (
	// BadCredentials: MQTT 5 0x86 Bad User Name or Password, 3.1.1 0x04.
	BadCredentials Code = iota + 1
	// NotAuthorized: MQTT 5 0x87 Not authorized, 3.1.1 0x05.
	NotAuthorized
	// ClientIDNotValid: MQTT 5 0x85 Client Identifier not valid, 3.1.1 0x02
	// Identifier rejected.
	ClientIDNotValid
	// RateExceeded: MQTT 5 0x9F Connection rate exceeded, 3.1.1 0x03 Server
	// unavailable; both tell a well-behaved client to come back later
	// rather than that its credentials are wrong.
	RateExceeded
)

// Byte returns the CONNACK code for protocolVersion: 5 gets the MQTT 5
// reason code [MQTT-3.2.2.2], 3 and 4 (MQTT 3.1 and 3.1.1) the return code
// [MQTT-3.2.2.3].
func (c Code) Byte(protocolVersion byte) byte {
	v5 := protocolVersion >= 5
	switch c {
	case BadCredentials:
		return pick(v5, 0x86, 0x04)
	case ClientIDNotValid:
		return pick(v5, 0x85, 0x02)
	case RateExceeded:
		return pick(v5, 0x9F, 0x03)
	default:
		return pick(v5, 0x87, 0x05)
	}
}

func pick(v5 bool, five, four byte) byte {
	if v5 {
		return five
	}
	return four
}

// String names the code for logs.
func (c Code) String() string {
	switch c {
	case BadCredentials:
		return "bad_credentials"
	case ClientIDNotValid:
		return "client_id_not_valid"
	case RateExceeded:
		return "rate_exceeded"
	default:
		return "not_authorized"
	}
}

// Code returns the CONNACK answer of the reason.
func (r Reason) Code() Code {
	switch r {
	case ReasonUnknownUser, ReasonWrongPassword,
		ReasonTokenMalformed, ReasonTokenBadSignature, ReasonTokenUnknownKey, ReasonTokenAlgorithm,
		ReasonTokenExpired, ReasonTokenNotYetValid, ReasonTokenClaims:
		return BadCredentials
	case ReasonClientIDMismatch:
		return ClientIDNotValid
	case ReasonThrottled:
		return RateExceeded
	default: // no_credentials, anonymous_refused, cert_no_identity, cert_revoked
		return NotAuthorized
	}
}

// Failure is the error of a refused CONNECT. Its text holds the method, the
// reason and a detail written by this package (a claim name, a kid count),
// never the password or the token.
type Failure struct {
	// Method is the method that decided ("password", "jwt", "cert"), or
	// empty when none applied.
	Method string
	// Reason says why, from a fixed set.
	Reason Reason
	// Detail adds context for the operator; it never holds a credential.
	Detail string
}

func (f *Failure) Error() string {
	s := "auth: "
	if f.Method != "" {
		s += f.Method + ": "
	}
	s += string(f.Reason)
	if f.Detail != "" {
		s += ": " + f.Detail
	}
	return s
}

// Code returns the CONNACK answer the failure means.
func (f *Failure) Code() Code { return f.Reason.Code() }

// ConnackCode returns the CONNACK byte for protocolVersion (3, 4 or 5).
func (f *Failure) ConnackCode(protocolVersion byte) byte {
	return f.Code().Byte(protocolVersion)
}

// LogValue logs the failure as a group of method, reason and detail.
func (f *Failure) LogValue() slog.Value {
	return slog.GroupValue(slog.String("method", f.Method), slog.String("reason", string(f.Reason)), slog.String("detail", f.Detail))
}

// ConnackCode returns the CONNACK byte for protocolVersion that err (from
// Chain.Authenticate) means: the Failure's code, or not authorized for any
// other error.
func ConnackCode(err error, protocolVersion byte) byte {
	if f, ok := errors.AsType[*Failure](err); ok {
		return f.ConnackCode(protocolVersion)
	}
	return NotAuthorized.Byte(protocolVersion)
}

func fail(method string, r Reason, detail string) *Failure {
	return &Failure{Method: method, Reason: r, Detail: detail}
}
