//go:build !race

package topic

// raceEnabled is true when the tests run under the race detector, which
// allocates on its own.
const raceEnabled = false
