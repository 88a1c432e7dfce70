// Package config loads a service's configuration from, in rising precedence,
// the defaults registered on a flag set, an optional YAML file, environment
// variables and explicit command-line flags.
//
// It imports no package of fleetgate.
package config
