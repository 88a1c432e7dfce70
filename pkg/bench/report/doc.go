// Package report prints the results of fleetgate-bench: for people as
// tables (one workload's run against one broker, the side-by-side
// comparison with each target's ratio to the baseline, the archive
// benchmark, the wake-up cost) and for scripts as indented JSON of the same
// result, whose field names test/bench/run.sh and docs/benchmarks.md read.
//
// Of fleetgate it imports pkg/bench/archivebench, pkg/bench/compare,
// pkg/bench/load, pkg/bench/measure. test/imports holds the import rules.
package report
