// Package mqttwire reads and writes whole MQTT packets on a byte stream with
// mochi-mqtt's packet codec. mochi decodes a packet body but leaves framing
// (fixed header, remaining length) and the choice of codec to its caller;
// fleetgate's load generator and tests speak MQTT as a client and need both.
//
// It imports no package of fleetgate.
package mqttwire
