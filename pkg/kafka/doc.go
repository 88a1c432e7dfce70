// Package kafka builds fleetgate's franz-go clients. It is the one place that
// sets non-default client options; each carries a comment saying why.
//
// Of fleetgate it imports pkg/config, pkg/telemetry. test/imports holds the
// import rules.
package kafka
