// Package benchtest holds what the tests of the benchmark tool's packages
// share: the broker they measure (Debian's mosquitto on a free loopback
// port, persistence off, started once per test binary; or one of a test's
// own that admits only the users of a password file, or only TLS clients)
// and a silent flag
// set for filling configurations with their defaults. It is for tests only
// and links no testing package, so that the rule that nothing under pkg/
// links test helpers holds for it too (test/imports).
//
// Of fleetgate it imports pkg/bench/internal/tlsfiles.
package benchtest
