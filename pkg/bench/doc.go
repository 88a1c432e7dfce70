// Package bench is the command line of fleetgate-bench, the benchmark tool
// that docs/benchmarks.md reports and test/bench/run.sh drives: it parses a
// subcommand and its flags, runs what the subcommand names and writes the
// result as a table or as JSON. The work is in its packages:
//
//	load          the load generator: a minimal MQTT client and the pub, pairs,
//	              fanout, idle, connect and wakeup workloads against one
//	              broker, anonymous or with credentials per client
//	access        the files of the access-control benchmark: a rules file,
//	              identities, an ES256 key with a JWT per device, password
//	              files
//	compare       the side-by-side runner: one workload against several
//	              brokers, round-robin, with CPU profiles
//	archivebench  the archive benchmark: the archiver against a plain
//	              MongoDB bulk-insert loop
//	report        the tables and the JSON of every result
//	measure       the figures they all take: latency histograms, a process's
//	              CPU time and memory, and the units they print in
//
// Of fleetgate it imports pkg/bench/access, pkg/bench/archivebench,
// pkg/bench/compare, pkg/bench/internal/tlsfiles, pkg/bench/load,
// pkg/bench/measure, pkg/bench/report.
// test/imports holds the import rules.
package bench
