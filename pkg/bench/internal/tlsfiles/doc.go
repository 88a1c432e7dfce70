// Package tlsfiles writes the certificates of the TLS benchmarks: a CA and
// a server certificate it signed, for brokers listening on loopback
// (fleetgate-bench tls-files, and the tests' TLS-only mosquitto).
//
// It imports no package of fleetgate.
package tlsfiles
