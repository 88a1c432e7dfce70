package config

import "strings"

// Secret is a string setting, such as a password, that is never printed:
// -config.verify and logs show it as "<redacted>" when set.
type Secret string

// String implements flag.Value; it redacts.
func (s *Secret) String() string {
	if s == nil || *s == "" {
		return ""
	}
	return "<redacted>"
}

// Set implements flag.Value.
func (s *Secret) Set(v string) error {
	*s = Secret(v)
	return nil
}

// Value returns the secret itself, for the code that needs it.
func (s Secret) Value() string { return string(s) }

// MarshalYAML redacts the value.
func (s Secret) MarshalYAML() (any, error) {
	if s == "" {
		return "", nil
	}
	return "<redacted>", nil
}

// URL is a connection string setting (mongodb://user:password@host/...)
// whose password is never printed: -config.verify and logs show it as
// "<redacted>", the rest as it is.
type URL string

// String implements flag.Value; it redacts the password.
func (u *URL) String() string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

// Set implements flag.Value.
func (u *URL) Set(v string) error {
	*u = URL(v)
	return nil
}

// Value returns the connection string itself, for the code that needs it.
func (u URL) Value() string { return string(u) }

// Redacted returns the connection string with its password replaced.
func (u URL) Redacted() string {
	s := string(u)
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	// The user information ends at the last "@" before the path: hosts
	// lists (a,b,c) have none, passwords may (percent-encoded or not).
	hostEnd := strings.IndexAny(rest, "/?")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	at := strings.LastIndex(rest[:hostEnd], "@")
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return s
	}
	return scheme + "://" + user + ":<redacted>" + rest[at:]
}

// MarshalYAML redacts the password.
func (u URL) MarshalYAML() (any, error) { return u.Redacted(), nil }
