//go:build !linux

package frontend

import (
	"errors"
	"sync/atomic"
)

// poller is Linux's epoll set of parked connections (poll_linux.go);
// elsewhere connections are not parked and wait on their goroutine.
type poller struct{ parked *atomic.Int64 }

func newPoller(*atomic.Int64) (*poller, error) {
	return nil, errors.New("parking connections needs epoll")
}

func (p *poller) run()                 {}
func (p *poller) stop()                {}
func (p *poller) add(c *conn) bool     { return false }
func (p *poller) insert(fd int32) bool { return false }
func (p *poller) arm(fd int32) bool    { return false }
func (p *poller) forget(c *conn)       {}
