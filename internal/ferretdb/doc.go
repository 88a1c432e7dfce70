// Package ferretdb builds the MongoDB-wire server (FerretDB with its SQLite
// backend) that the archive tests and the benchmark tool run where no
// MongoDB is installed. It imports nothing of fleetgate's and not the
// testing package, so the benchmark binary can use it.
//
// It imports no package of fleetgate.
package ferretdb
