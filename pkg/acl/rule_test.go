package acl

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPlaceholders(t *testing.T) {
	r := mustParse(t, `
rules:
  - {permission: deny, action: all, topics: ["private/%u/%c/#"]}
  - {permission: allow, action: all, topics: ["users/%u/#", "clients/%c", "private/#", "shared"]}
`)
	cases := []struct {
		name    string
		subject Subject
		topic   string
		want    bool
	}{
		{"the identity takes the place of %u", Subject{Identity: "alice", ClientID: "c1"}, "users/alice/x", true},
		{"another identity's level is not allowed", Subject{Identity: "alice", ClientID: "c1"}, "users/bob/x", false},
		{"the client id takes the place of %c", Subject{Identity: "alice", ClientID: "c1"}, "clients/c1", true},
		{"a deny rule's placeholders are substituted too", Subject{Identity: "alice", ClientID: "c1"}, "private/alice/c1/x", false},
		{"a deny rule for another subject does not deny", Subject{Identity: "alice", ClientID: "c1"}, "private/bob/c1/x", true},
		{"an identity with a slash leaves an allow filter out", Subject{Identity: "a/b", ClientID: "c1"}, "users/a/b/x", false},
		{"an identity of # leaves an allow filter out rather than allowing all", Subject{Identity: "#", ClientID: "c1"}, "users/bob/x", false},
		{"an identity of + leaves an allow filter out rather than allowing a level", Subject{Identity: "+", ClientID: "c1"}, "users/bob", false},
		{"an empty client id leaves an allow filter out", Subject{Identity: "alice"}, "clients/", false},
		{"a client id with NUL leaves an allow filter out", Subject{Identity: "alice", ClientID: "c\x00"}, "clients/c", false},
		{"an unusable value keeps the other filters of the rule", Subject{Identity: "a/b", ClientID: "c1"}, "shared", true},
		{"an unusable value makes a deny level a wildcard, denying more, never less", Subject{Identity: "a/b", ClientID: "c1"}, "private/anyone/c1/x", false},
		{"an empty value makes a deny level a wildcard", Subject{Identity: "alice"}, "private/alice/whoever/x", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, mustPolicy(t, r, c.subject).AllowPublish(c.topic))
		})
	}
}
