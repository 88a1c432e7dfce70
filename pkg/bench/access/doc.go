// Package access makes the files of fleetgate-bench's access-control
// benchmark (docs/benchmarks.md, "Access control"): a fleet of device
// identities, an authorization rules file of the size a real fleet has
// (groups listing every identity, rules for everyone, for groups and for
// single identities, some with %u and %c placeholders, and last the rule
// that lets each device publish below its own name), an ES256 key pair with
// one JWT per device (sub = identity), and a bcrypt password file with the
// plain passwords beside it. The plain files are username:password lines:
// what pkg/bench/load's clients connect with, and what `mosquitto_passwd -U`
// turns into a mosquitto password file. It writes files only; the brokers
// that read them are started by the caller (test/bench/run.sh).
//
// It imports no package of fleetgate.
package access
