// Package load is fleetgate-bench's load generator: a minimal MQTT client
// that keeps a window of publishes in flight, and the workloads built on it
// with their configurations and results: publishers (closed or open loop),
// publisher → subscriber pairs and fan-out timed end to end, idle
// connections for a broker's memory per connection, devices reconnecting
// (connects/s and CONNACK latency), and the cost of a loopback wake-up on
// this machine. It speaks MQTT itself (packets are encoded and decoded with
// mochi-mqtt's packets package) so that it can pipeline publishes the way a
// fleet of devices does, which the usual client libraries do not allow.
//
// Clients connect anonymously unless given a username and password: one
// for all, or one per client (Credentials, a function or a file of
// username:password lines). It makes no credentials itself: tokens and
// password files are pkg/bench/access's. It runs against one broker at a
// time; comparing brokers is pkg/bench/compare's, printing results
// pkg/bench/report's.
//
// Of fleetgate it imports pkg/bench/measure, pkg/mqttwire. test/imports holds
// the import rules.
package load
