// Package gcheadroom keeps the Go garbage collector from running while the
// heap is small merely because it is small.
//
// Go starts a collection when the heap has grown by GOGC per cent (100) of
// what the last one left live. A fleetgate process holds little live heap
// (a frontend with a few hundred busy connections about 20 MB, a
// dispatcher less) and allocates fast, so it collected several times a
// second under load, and every collection did work that does not shrink
// with the heap: it scanned every goroutine's stack and halved the stacks
// of the busy connections, which grew them again by copying at their next
// packet (runtime.copystack and newstack were 18 % of the frontend's CPU
// in the closed-loop pairs benchmark, GC itself 6 %). Headroom raises the
// GOGC percentage after each collection so that the next one comes only
// after at least gc.min-headroom bytes were allocated. Once the live heap
// is large (a frontend with many connections) GOGC's own headroom is the
// larger and nothing changes; GOMEMLIMIT, when set, still bounds it all.
//
// Of fleetgate it imports pkg/config. test/imports holds the import rules.
package gcheadroom
