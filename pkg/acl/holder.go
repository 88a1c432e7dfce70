package acl

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Holder holds the current rules of a rules file and reloads them; the
// policies it makes follow. A Holder made by AllowAll holds the open mode.
// It is safe for concurrent use.
type Holder struct {
	path     string
	cur      atomic.Pointer[Rules]
	mu       sync.Mutex // serializes Reload
	failures atomic.Uint64
}

// AllowAll returns the Holder of no rules file: authorization is not
// configured, and every subject may publish and subscribe to everything
// (but see Policy for Subject.Extra). Holder.Open reports it, so that the
// caller can say so in its logs.
func AllowAll() *Holder {
	h := &Holder{}
	h.cur.Store(openRules)
	return h
}

// Load reads the rules file at path into a new Holder. An error (a missing
// file, or a *ParseError) means no Holder: the caller must not fall back to
// AllowAll.
func Load(path string) (*Holder, error) {
	r, err := ReadRules(path)
	if err != nil {
		return nil, err
	}
	h := &Holder{path: path}
	h.cur.Store(r)
	return h, nil
}

// For returns the policy of s, which follows the Holder's reloads. The
// error, a *ParseError, is for bad s.Extra rules; the caller should refuse
// the connection.
func (h *Holder) For(s Subject) (*Policy, error) {
	return newPolicy(h, h.cur.Load(), s)
}

// Reload reads the rules file again. If it cannot be read or parsed, the
// current rules stay (never an open door), the failure is counted
// (ReloadFailures) and the error returned. A file with the same bytes keeps
// the current rules and their generation, so that reloading on a timer
// costs the policies nothing. In open mode it does nothing.
func (h *Holder) Reload() error {
	if h.path == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Load()
	data, err := os.ReadFile(h.path)
	if err != nil {
		h.failures.Add(1)
		return fmt.Errorf("reloading authorization rules, keeping generation %d: %w", old.gen, err)
	}
	if sha256.Sum256(data) == old.sum {
		return nil
	}
	r, err := ParseRules(h.path, data)
	if err != nil {
		h.failures.Add(1)
		return fmt.Errorf("reloading authorization rules, keeping generation %d: %w", old.gen, err)
	}
	r.gen = old.gen + 1
	h.cur.Store(r)
	return nil
}

// Rules returns the current rules.
func (h *Holder) Rules() *Rules { return h.cur.Load() }

// Open reports whether the Holder is in open mode (AllowAll).
func (h *Holder) Open() bool { return h.cur.Load().open }

// Path returns the rules file, empty in open mode.
func (h *Holder) Path() string { return h.path }

// Generation returns the generation of the current rules: 1 after Load, one
// more for each reload that changed them; 0 in open mode.
func (h *Holder) Generation() uint64 { return h.cur.Load().gen }

// ReloadFailures returns how many reloads failed and kept the rules they
// found.
func (h *Holder) ReloadFailures() uint64 { return h.failures.Load() }
