// Package telemetry sets up what every fleetgate binary reports: structured
// logs, OpenTelemetry metrics exposed in Prometheus text format, and the
// operations HTTP server with /healthz, /readyz and /metrics.
//
// It imports no package of fleetgate.
package telemetry
