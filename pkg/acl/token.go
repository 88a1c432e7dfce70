package acl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// errExtraScope is a rule of a subject that names whom it applies to.
var errExtraScope = errors.New("a subject's own rules apply to it alone: no identities or groups")

// tokenRule is a rule as a token claim writes it.
type tokenRule struct {
	Permission string   `json:"permission"`
	Action     string   `json:"action"`
	Topics     []string `json:"topics"`
}

// ParseTokenRules reads the rules a token grants its subject, for
// Subject.Extra: a JSON array of objects with the fields "permission",
// "action" and "topics" of the rules file, and no others:
//
//	[{"permission": "allow", "action": "all", "topics": ["fleet/%c/#"]}]
//
// "null" is no rules. Errors are a *ParseError with the source "token".
func ParseTokenRules(data []byte) ([]Rule, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &ParseError{Source: "token", Path: "rules", Err: err}
	}
	if raw == nil {
		return nil, nil
	}
	rules := make([]Rule, len(raw))
	for i, m := range raw {
		path := fmt.Sprintf("rules[%d]", i)
		if bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
			return nil, &ParseError{Source: "token", Path: path, Err: errors.New("want an object, not null")}
		}
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.DisallowUnknownFields()
		var t tokenRule
		if err := dec.Decode(&t); err != nil {
			return nil, &ParseError{Source: "token", Path: path, Err: err}
		}
		r := Rule{Permission: Permission(t.Permission), Action: Action(t.Action), Topics: t.Topics}
		if _, field, err := compileRule(r); err != nil {
			return nil, &ParseError{Source: "token", Path: path + "." + field, Err: err}
		}
		rules[i] = r
	}
	return rules, nil
}
