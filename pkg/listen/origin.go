package listen

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// AnyOrigin in the allowed Origins lets every browser page open the
// WebSocket listener.
const AnyOrigin = "*"

// originPolicy decides which WebSocket handshakes a browser may make. Only
// browsers send Origin, and only browsers need the check: it keeps a page
// of another site from opening an MQTT connection with the credentials
// (cookies, client certificate) of the browser's user. A client that sends
// no Origin is not a browser, and could send any Origin it liked anyway.
type originPolicy struct {
	any     bool
	allowed map[string]bool // normalised origins
	refused func(reason string)
}

func newOriginPolicy(list []string, refused func(reason string)) originPolicy {
	p := originPolicy{allowed: map[string]bool{}, refused: refused}
	for _, o := range list {
		if strings.TrimSpace(o) == AnyOrigin {
			p.any = true
			continue
		}
		if n, err := normaliseOrigin(o); err == nil {
			p.allowed[n] = true
		}
	}
	return p
}

// allows is the upgrader's CheckOrigin: no Origin (a device) passes, a
// listed one passes, every other one gets 403.
func (p originPolicy) allows(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.any {
		return true
	}
	if n, err := normaliseOrigin(origin); err == nil && p.allowed[n] {
		return true
	}
	p.refused(RefusedOrigin)
	return false
}

// normaliseOrigin returns origin as a browser serialises it
// (RFC 6454 section 6.2): lower-case scheme://host[:port], without the
// scheme's default port. An allow-list entry may end in "/".
func normaliseOrigin(origin string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(origin))
	if err != nil {
		return "", err
	}
	switch {
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return "", errors.New("not scheme://host[:port]")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("an origin has no user, path, query or fragment")
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if h, port, err := net.SplitHostPort(host); err == nil && (scheme == "http" && port == "80" || scheme == "https" && port == "443") {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]" // IPv6 literal
		}
	}
	return fmt.Sprintf("%s://%s", scheme, host), nil
}
