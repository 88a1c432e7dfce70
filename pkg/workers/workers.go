package workers

import "time"

// idle is how long a worker waits for more work before it ends.
const idle = time.Second

// job is one function handed to a worker; done, when not nil, is closed
// once it returned.
type job struct {
	f    func()
	done chan struct{}
}

// jobs hands work to workers waiting for it; unbuffered, so a job is only
// ever taken by a worker that is free.
var jobs = make(chan *job)

// Go runs f on a free worker, or on a new one when none is free, and
// returns at once.
func Go(f func()) { start(&job{f: f}) }

// Run runs f on a free worker, or on a new one when none is free, and
// returns when f did: f's stack growth stays off the caller's stack (a
// goroutine's stack only shrinks at GC while it uses under a quarter of
// it, so a long-lived caller that waits in a shallow frame keeps a small
// stack).
func Run(f func()) {
	j := &job{f: f, done: make(chan struct{})}
	start(j)
	<-j.done
}

func start(j *job) {
	select {
	case jobs <- j:
	default:
		go work(j)
	}
}

// work runs j, then whatever work comes within idle of its last.
func work(j *job) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		j.run()
		t.Reset(idle)
		select {
		case j = <-jobs:
		case <-t.C:
			return
		}
	}
}

func (j *job) run() {
	if j.done != nil {
		defer close(j.done)
	}
	j.f()
}
