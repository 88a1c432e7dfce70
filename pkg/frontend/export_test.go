package frontend

import (
	"fmt"
	"reflect"
)

// QueuedToMochi counts the packets waiting in mochi's outbound queue of
// every client connected to s. With mqtt.serve=lean no WriteLoop drains
// that queue, so anything queued there would never reach its client. The
// queue is unexported: a mochi release that renames it fails the test
// rather than passing it.
func QueuedToMochi(s *Server) (int, error) {
	n := 0
	for _, cl := range s.sessions.Clients() {
		q := reflect.ValueOf(&cl.State).Elem().FieldByName("outbound")
		if !q.IsValid() || q.Kind() != reflect.Chan {
			return 0, fmt.Errorf("mochi's Client.State has no outbound channel any more (%v)", q.Kind())
		}
		n += q.Len()
	}
	return n, nil
}

// Connected counts the clients connected to s (its sessions registry) and
// those in mochi's Server.Clients.
func Connected(s *Server) (registry, mochi int) {
	return len(s.sessions.Clients()), s.mochi.Clients.Len()
}
