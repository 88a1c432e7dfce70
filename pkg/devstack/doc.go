// Package devstack runs fleetgate on one machine with nothing installed: an
// embedded Kafka-protocol cluster (franz-go's kfake, persisted to a data
// directory), the frontend, a dispatcher and, given a MongoDB, an archiver in
// one process. It is for trying fleetgate and for tests; production uses real
// Kafka (see docker-compose.yml and deploy/).
//
// Of fleetgate it imports pkg/archive, pkg/archiver, pkg/config,
// pkg/dispatch, pkg/frontend, pkg/telemetry. test/imports holds the import
// rules.
package devstack
