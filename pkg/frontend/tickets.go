package frontend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// TLS session tickets let a device that reconnects resume its TLS session
// (TLS 1.3 PSK, TLS 1.2 tickets) instead of a full handshake: no
// certificate signature, about half the CPU of the connection's setup. Go
// encrypts tickets with keys of its own per process, so a device resumes
// only on the frontend that issued its ticket; after a node restart or a
// load balancer spreading reconnects, every device pays a full handshake.
// With mqtt.tls-session-ticket-keys-file every frontend holds the same keys
// and any of them resumes any device's session.

// ticketKeys reads a session ticket key file: one key per line, 64
// hexadecimal characters (32 random bytes: openssl rand -hex 32), blank
// lines and lines starting with # ignored. The first key encrypts new
// tickets; every key decrypts, so a key can be rotated in without breaking
// the tickets of the one before (docs/listeners.md). It never returns a key
// in an error.
func ticketKeys(path string) ([][32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) != 64 {
			return nil, fmt.Errorf("%s line %d: a key is 64 hexadecimal characters (32 bytes), this line has %d characters", path, n, len(line))
		}
		var k [32]byte
		if _, err := hex.Decode(k[:], []byte(line)); err != nil {
			return nil, fmt.Errorf("%s line %d: not hexadecimal", path, n)
		}
		if k == [32]byte{} {
			return nil, fmt.Errorf("%s line %d: an all-zero key", path, n)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key", path)
	}
	return keys, nil
}

// reloadTicketKeys reads mqtt.tls-session-ticket-keys-file again and hands
// its keys to the TLS listeners; a file that fails to load keeps the keys
// in force (logged, counted as a failed reload of "tls_ticket_keys").
func (s *Server) reloadTicketKeys(ctx context.Context, why string) {
	path, tc := s.cfg.MQTT.TLSSessionTicketKeysFile, s.tlsConf.Load()
	if path == "" || tc == nil {
		return
	}
	keys, err := ticketKeys(path)
	if err != nil {
		s.metrics.reloaded(ctx, "tls_ticket_keys", false)
		s.log.Error("tls session ticket keys not reloaded; the previous keys stay in force", "why", why, "err", err)
		return
	}
	tc.SetSessionTicketKeys(keys)
	s.metrics.reloaded(ctx, "tls_ticket_keys", true)
	s.log.Info("tls session ticket keys reloaded", "why", why, "keys", len(keys))
}
