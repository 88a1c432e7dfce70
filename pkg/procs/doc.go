// Package procs fits GOMAXPROCS to the CPU a process uses.
//
// A fleet node spends most of its life far from busy: 2,000 devices sending
// a message a second keep a frontend at a quarter of a core. Go runs
// goroutines on GOMAXPROCS processors (one per core by default), and while
// one of them is idle every goroutine made ready (a packet read, a Kafka
// acknowledgement, a Redis reply) wakes a sleeping thread to run it there:
// a futex call to wake it, another when it finds nothing more and sleeps,
// the scheduler's search for work in between. At a message a second per
// device that is several wake-ups per message, and they, not the message,
// were a quarter of the frontend's and the dispatcher's CPU
// (docs/benchmarks.md: the same processes at GOMAXPROCS=1 used 0.75x the
// CPU per message, for the same PUBACK latency).
//
// A Controller samples the process's CPU time (user and system) every 50 ms
// and keeps GOMAXPROCS at the processors that CPU needs: it raises it at
// once, up to the GOMAXPROCS the process started with, when the processors
// in use were Up (60 %) busy in two samples in a row, and lowers it when
// one processor fewer would have been under Down (50 %) busy on average
// over a window of Calm (5 s). A node that gets busy has its cores back
// within a tenth of a second (a third of a second from idle, where it samples
// every 200 ms); an idle or lightly loaded one runs on one processor and
// wakes no thread to hand a goroutine over.
//
// The GOMAXPROCS a process starts with (Go's default: the cores, or the
// container's CPU limit; or the GOMAXPROCS environment variable) stays the
// ceiling. go_sched_gomaxprocs_threads on /metrics is the value in force.
//
// It imports no package of fleetgate. test/imports holds the import rules.
package procs
