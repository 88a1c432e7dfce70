//go:build unix

package load

import "syscall"

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT, so that binding the source
// address leaves the port to connect(), which may share a local port between
// different destinations, instead of bind()'s search for a port no socket
// holds.
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h).
const ipBindAddressNoPort = 24
