// Package auth decides who is connecting: it turns the credentials of an
// MQTT CONNECT (username and password, a JWT given as the password, or the
// verified TLS client certificate) into an Identity, or refuses them with a
// Failure whose bounded Reason feeds metrics and logs and whose Code is the
// CONNACK answer.
//
// It owns the password file (bcrypt hashes, the cache of verified passwords
// and the throttling of failures), the JWT verification keys (PEM, JWKS and
// HMAC secret files) and the client-id policy. It does not own what an
// identity may do: a token's rules claim is handed on as raw JSON, unparsed.
// It knows nothing of mochi-mqtt: the frontend adapts the CONNECT packet
// into a Request.
//
// No password, token or secret ever appears in an error or a log line of
// this package: errors name the file, the line, the user or the claim, never
// the credential.
//
// Of fleetgate it imports pkg/config, pkg/procs. test/imports holds the import rules.
package auth
