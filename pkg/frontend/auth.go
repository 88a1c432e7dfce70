package frontend

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// authHook authenticates CONNECTs against a bcrypt password file, or accepts
// everyone when there is none. mochi ORs the answers of all auth hooks, so it
// must be the only one.
type authHook struct {
	mqtt.HookBase
	users          map[string][]byte // username → bcrypt hash; nil accepts everyone
	allowAnonymous bool
	log            *slog.Logger
	onReject       func()
}

// loadPasswordFile reads username:bcrypt-hash lines; # starts a comment.
func loadPasswordFile(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth.password-file: %w", err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("auth.password-file: %s line %d: want username:bcrypt-hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("auth.password-file: %s line %d: user %q: not a bcrypt hash: %w", path, n, user, err)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth.password-file: %w", err)
	}
	return users, nil
}

func (h *authHook) ID() string { return "fleetgate-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate accepts the CONNECT when the password file is unset,
// or the username and password match, or anonymous access is allowed and no
// username was given. A rejected CONNECT gets CONNACK 0x86 / 0x04.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.users == nil {
		return true
	}
	user := string(pk.Connect.Username)
	if user == "" && !pk.Connect.UsernameFlag {
		if h.allowAnonymous {
			return true
		}
		h.reject(cl, "anonymous clients not allowed")
		return false
	}
	hash, ok := h.users[user]
	if !ok {
		// Compare anyway so unknown users cost the same time as known ones.
		_ = bcrypt.CompareHashAndPassword(dummyHash, pk.Connect.Password)
		h.reject(cl, "unknown user")
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, pk.Connect.Password) != nil {
		h.reject(cl, "wrong password")
		return false
	}
	return true
}

var dummyHash, _ = bcrypt.GenerateFromPassword(bytes.Repeat([]byte("x"), 8), bcrypt.MinCost)

func (h *authHook) reject(cl *mqtt.Client, why string) {
	h.log.Info("connect rejected", "client_id", cl.ID, "username", string(cl.Properties.Username), "remote", cl.Net.Remote, "reason", why)
	if h.onReject != nil {
		h.onReject()
	}
}

// OnACLCheck allows every topic; per-topic authorisation is not configured.
func (h *authHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
