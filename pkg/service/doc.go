// Package service holds the start-up steps every fleetgate binary shares:
// loading configuration, building the logger and metrics, and turning
// SIGTERM/SIGINT into context cancellation.
//
// Of fleetgate it imports pkg/config. test/imports holds the import rules.
package service
