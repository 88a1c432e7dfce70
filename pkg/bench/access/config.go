package access

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Config says what to generate. Identity i of the fleet is
// <Prefix><i>, zero-padded to at least six digits; tokens and passwords are
// made for the first identities, which are also the ones a benchmark's
// clients connect as (client i with line i of a credentials file).
type Config struct {
	// Dir receives the files; it is created if missing.
	Dir string `json:"dir"`
	// Identities is the number of device identities in the rules file.
	Identities int `json:"identities"`
	// Groups is the number of site groups the identities are spread over
	// (identity i in site i mod Groups), besides the group of the whole
	// fleet.
	Groups int `json:"groups"`
	// Rules is the number of rules of the file, the devices' own rule
	// included.
	Rules int `json:"rules"`
	// Prefix starts every device identity.
	Prefix string `json:"prefix"`
	// Tokens is the number of devices that get a JWT.
	Tokens int `json:"tokens"`
	// TokenTTL is the lifetime of the tokens (their exp).
	TokenTTL time.Duration `json:"token_ttl_ns"`
	// Passwords is the number of devices that get a password.
	Passwords int `json:"passwords"`
	// PasswordCost is the bcrypt cost of the hashes.
	PasswordCost int `json:"password_cost"`
	// PasswordHashes is the number of distinct passwords, dealt to the
	// devices in turn. Making a bcrypt hash costs what checking one does
	// (about 70 ms at cost 10 on one core), so 10,000 distinct hashes would
	// take minutes; a broker's work per CONNECT is the same either way
	// (each device has a line and a cache entry of its own).
	PasswordHashes int `json:"password_hashes"`
}

// RegisterFlags registers the generator's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Dir, "dir", "", "Directory to write the files into (created if missing); required.")
	fs.IntVar(&c.Identities, "identities", 100000, "Device identities listed in the groups of the rules file.")
	fs.IntVar(&c.Groups, "groups", 100, "Site groups the identities are spread over (besides the group of the whole fleet).")
	fs.IntVar(&c.Rules, "rules", 1000, "Rules in the rules file, the devices' own (allow devices/%u/#, last) included; at least 1.")
	fs.StringVar(&c.Prefix, "prefix", "dev-", "Start of every device identity.")
	fs.IntVar(&c.Tokens, "tokens", 10000, "Devices (the first ones) that get an ES256 JWT, sub = identity.")
	fs.DurationVar(&c.TokenTTL, "token-ttl", 24*time.Hour, "Lifetime of the tokens.")
	fs.IntVar(&c.Passwords, "passwords", 10000, "Devices (the first ones) that get a password.")
	fs.IntVar(&c.PasswordCost, "password-cost", bcrypt.DefaultCost, "bcrypt cost of the password hashes (fleetgate's and htpasswd's default is 10).")
	fs.IntVar(&c.PasswordHashes, "password-hashes", 64, "Distinct passwords (so bcrypt hashes to make), dealt to the devices in turn; each device still has a line of its own.")
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir: must be given"))
	}
	if c.Identities < 1 {
		errs = append(errs, errors.New("identities: must be at least 1"))
	}
	if c.Groups < 1 || c.Groups > c.Identities {
		errs = append(errs, errors.New("groups: must be between 1 and identities"))
	}
	if c.Rules < 1 {
		errs = append(errs, errors.New("rules: must be at least 1"))
	}
	if c.Prefix == "" {
		errs = append(errs, errors.New("prefix: must not be empty"))
	}
	if c.Tokens < 0 || c.Tokens > c.Identities {
		errs = append(errs, errors.New("tokens: must be between 0 and identities"))
	}
	if c.TokenTTL <= 0 {
		errs = append(errs, errors.New("token-ttl: must be positive"))
	}
	if c.Passwords < 0 || c.Passwords > c.Identities {
		errs = append(errs, errors.New("passwords: must be between 0 and identities"))
	}
	if c.PasswordCost < bcrypt.MinCost || c.PasswordCost > bcrypt.MaxCost {
		errs = append(errs, fmt.Errorf("password-cost: must be between %d and %d", bcrypt.MinCost, bcrypt.MaxCost))
	}
	if c.PasswordHashes < 1 {
		errs = append(errs, errors.New("password-hashes: must be at least 1"))
	}
	return errors.Join(errs...)
}

// Identity returns the name of device i.
func (c *Config) Identity(i int) string {
	return fmt.Sprintf("%s%0*d", c.Prefix, c.width(), i)
}

// width is the number of digits of the identities: six, or more for a
// fleet of a million or more.
func (c *Config) width() int {
	return max(6, len(fmt.Sprint(c.Identities-1)))
}
