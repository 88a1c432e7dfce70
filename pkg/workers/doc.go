// Package workers runs short pieces of work on goroutines that outlive
// them. A goroutine starts with a small stack and grows it by copying as
// the work's call chain deepens; work that comes often (a CONNECT, a
// connection's end, a PUBLISH after a quiet spell, a connection's
// acknowledgements) would otherwise pay a new goroutine and that growth
// every time. A worker that ran such work before has the stack it needs.
// Idle workers end after a second, so a quiet process holds none.
//
// It imports no package of fleetgate.
package workers
