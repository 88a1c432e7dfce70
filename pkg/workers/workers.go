package workers

import "time"

// idle is how long a worker waits for more work before it ends.
const idle = time.Second

// job is one function handed to a worker; done, when not nil, gets a
// value once it returned (buffered: the worker never waits for the
// caller).
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
	j := &job{f: f, done: make(chan struct{}, 1)}
	start(j)
	<-j.done
}

// Task is work run on a worker again and again, as Run runs it, with
// nothing allocated per run: for work that comes often on one long-lived
// caller (a connection's PUBLISH after a quiet spell), where Run's job,
// channel and closure would be garbage every time.
type Task struct{ j job }

// NewTask returns a Task that runs f.
func NewTask(f func()) *Task { return &Task{j: job{f: f, done: make(chan struct{}, 1)}} }

// Run runs the task's function on a free worker, or on a new one, and
// returns when it did. One Run at a time: a Task is its caller's own.
func (t *Task) Run() {
	start(&t.j)
	<-t.j.done
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
		defer j.finish()
	}
	j.f()
}

// finish tells the caller waiting in Run that j returned.
func (j *job) finish() { j.done <- struct{}{} }

// Job is work started on a worker again and again, as Go starts it, with
// nothing allocated per start: for work that comes often and that its
// caller does not wait for (a parked connection's next packet). One run at
// a time: the caller starts it again only once it returned, or knows it is
// about to return.
type Job struct{ j job }

// NewJob returns a Job that runs f.
func NewJob(f func()) *Job { return &Job{j: job{f: f}} }

// Go runs the job's function on a free worker, or on a new one, and
// returns at once.
func (j *Job) Go() { start(&j.j) }
