package config

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
