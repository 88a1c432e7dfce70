// Package compare is fleetgate-bench's side-by-side runner: it runs one
// workload of pkg/bench/load against several brokers (targets named
// name=host:port[,pid=N][,pprof=host:port]), round-robin with the order
// flipped every round so that a drift of the machine favours none, takes a
// CPU profile of a Go broker during its first measured round, and aggregates
// each target's rounds. A broker of several processes (pid=N+M+K: a
// frontend, its dispatcher, redis-server) has their CPU time and RSS summed
// as its own and each listed; processes apart (apart=N: the Kafka broker)
// are listed and not counted. compare samples those itself at the edges of
// the workload's measured window (processes.go). The brokers themselves are started by the caller
// (test/bench/run.sh); printing the comparison is pkg/bench/report's.
//
// Of fleetgate it imports pkg/bench/load, pkg/bench/measure. test/imports
// holds the import rules.
package compare
