package acl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"

	"gopkg.in/yaml.v3"
)

// Errors of the shape of a rules file, wrapped in a ParseError.
var (
	errEmpty       = errors.New("empty file: write \"rules: []\" to deny everything")
	errDocuments   = errors.New("more than one YAML document")
	errNoRules     = errors.New(`no "rules" field: write "rules: []" to deny everything`)
	errEmptyList   = errors.New("empty list: leave the field out for a rule that applies to everyone")
	errEmptyString = errors.New("empty string")
)

// fileRule is a rule of a rules file with whom it applies to.
type fileRule struct {
	rule
	identities []string
	groups     []string
}

// parsed is a rules file, checked.
type parsed struct {
	rules  []fileRule
	groups map[string][]string // group → identities, in file order
	quotas []fileQuota
}

// parseFile reads a rules file (see the package documentation). It walks the
// YAML nodes itself rather than decoding into structs, so that every error
// names the field and the line: an unknown field is an error, as with
// yaml.Decoder.KnownFields.
func parseFile(name string, data []byte) (*parsed, error) {
	p := fileParser{name: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			// A file that is empty (or only comments) is more likely a
			// truncated write than a wish to deny everything.
			return nil, &ParseError{Source: name, Err: errEmpty}
		}
		return nil, &ParseError{Source: name, Err: err}
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		line := more.Line
		if len(more.Content) > 0 {
			line = more.Content[0].Line
		}
		return nil, &ParseError{Source: name, Line: line, Err: errDocuments}
	} else if !errors.Is(err, io.EOF) {
		return nil, &ParseError{Source: name, Err: err}
	}
	if len(doc.Content) == 0 {
		return nil, &ParseError{Source: name, Err: errEmpty}
	}
	return p.file(doc.Content[0])
}

// fileParser turns YAML nodes into a parsed file.
type fileParser struct {
	name string
}

// errorf returns a ParseError at node n and field path.
func (p *fileParser) errorf(n *yaml.Node, path, format string, args ...any) error {
	return p.wrap(n, path, fmt.Errorf(format, args...))
}

// wrap returns err as a ParseError at node n and field path.
func (p *fileParser) wrap(n *yaml.Node, path string, err error) error {
	return &ParseError{Source: p.name, Path: path, Line: n.Line, Err: err}
}

func (p *fileParser) file(root *yaml.Node) (*parsed, error) {
	fields, err := p.mapping(root, "", "groups", "rules", "quotas")
	if err != nil {
		return nil, err
	}
	out := &parsed{groups: map[string][]string{}}
	if g := fields["groups"]; g != nil {
		if err := p.groups(g, out.groups); err != nil {
			return nil, err
		}
	}
	rules := fields["rules"]
	if rules == nil {
		return nil, p.wrap(root, "", errNoRules)
	}
	if rules.Kind != yaml.SequenceNode {
		return nil, p.errorf(rules, "rules", "want a list of rules")
	}
	out.rules = make([]fileRule, 0, len(rules.Content))
	for i, n := range rules.Content {
		r, err := p.rule(resolve(n), fmt.Sprintf("rules[%d]", i))
		if err != nil {
			return nil, err
		}
		out.rules = append(out.rules, r)
	}
	if q := fields["quotas"]; q != nil {
		if out.quotas, err = p.quotas(q); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// groups reads the groups mapping into groups.
func (p *fileParser) groups(n *yaml.Node, groups map[string][]string) error {
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "groups", "want a mapping from group names to lists of identities")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		name, err := p.scalar(k, "groups")
		if err != nil {
			return err
		}
		path := "groups." + name
		if _, dup := groups[name]; dup {
			return p.errorf(k, "groups", "duplicate group %q", name)
		}
		members, err := p.strings(v, path)
		if err != nil {
			return err
		}
		groups[name] = members
	}
	return nil
}

// rule reads one rule.
func (p *fileParser) rule(n *yaml.Node, path string) (fileRule, error) {
	fields, err := p.mapping(n, path, "permission", "action", "topics", "identities", "groups")
	if err != nil {
		return fileRule{}, err
	}
	for _, f := range []string{"permission", "action", "topics"} {
		if fields[f] == nil {
			return fileRule{}, p.errorf(n, path, "missing field %q", f)
		}
	}
	var r fileRule
	r.first = -1
	perm, err := p.scalar(fields["permission"], path+".permission")
	if err != nil {
		return fileRule{}, err
	}
	if r.allow, err = compilePermission(perm); err != nil {
		return fileRule{}, p.wrap(fields["permission"], path+".permission", err)
	}
	act, err := p.scalar(fields["action"], path+".action")
	if err != nil {
		return fileRule{}, err
	}
	if r.acts, err = compileAction(act); err != nil {
		return fileRule{}, p.wrap(fields["action"], path+".action", err)
	}
	topics := fields["topics"]
	filters, err := p.strings(topics, path+".topics")
	if err != nil {
		return fileRule{}, err
	}
	if len(filters) == 0 {
		return fileRule{}, p.wrap(topics, path+".topics", errNoTopics)
	}
	for i, f := range filters {
		pat, err := compilePattern(f)
		if err != nil {
			return fileRule{}, p.wrap(resolve(topics.Content[i]), fmt.Sprintf("%s.topics[%d]", path, i), err)
		}
		r.topics = append(r.topics, pat)
	}
	if r.identities, r.groups, err = p.scope(fields, path); err != nil {
		return fileRule{}, err
	}
	return r, nil
}

// scope reads whom a rule or a quota applies to: its identities and groups
// fields, each absent or a non-empty list.
func (p *fileParser) scope(fields map[string]*yaml.Node, path string) (identities, groups []string, err error) {
	for _, f := range []struct {
		name string
		dst  *[]string
	}{{"identities", &identities}, {"groups", &groups}} {
		v := fields[f.name]
		if v == nil {
			continue
		}
		list, err := p.strings(v, path+"."+f.name)
		if err != nil {
			return nil, nil, err
		}
		if len(list) == 0 {
			return nil, nil, p.wrap(v, path+"."+f.name, errEmptyList)
		}
		*f.dst = list
	}
	return identities, groups, nil
}

// mapping returns the fields of mapping n, which may have only the known
// ones, each at most once.
func (p *fileParser) mapping(n *yaml.Node, path string, known ...string) (map[string]*yaml.Node, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return nil, p.errorf(n, path, "want a mapping with the fields %v", known)
	}
	fields := make(map[string]*yaml.Node, len(known))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k.Kind != yaml.ScalarNode {
			return nil, p.errorf(k, path, "want field names %v", known)
		}
		if !slices.Contains(known, k.Value) {
			return nil, p.errorf(k, path, "unknown field %q, want one of %v", k.Value, known)
		}
		if fields[k.Value] != nil {
			return nil, p.errorf(k, path, "duplicate field %q", k.Value)
		}
		fields[k.Value] = resolve(n.Content[i+1])
	}
	return fields, nil
}

// strings returns the items of the list n, each a non-empty scalar. A
// number is taken as written: "- 007" is the identity "007".
func (p *fileParser) strings(n *yaml.Node, path string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorf(n, path, "want a list of strings")
	}
	out := make([]string, len(n.Content))
	for i, item := range n.Content {
		s, err := p.scalar(resolve(item), fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// scalar returns the text of the scalar n, which must not be null or empty.
func (p *fileParser) scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		// An unquoted # starts a YAML comment: `topics: [#]` is a null.
		return "", p.errorf(n, path, "want a string (quote topic filters with # in them)")
	}
	if n.Value == "" {
		return "", p.wrap(n, path, errEmptyString)
	}
	return n.Value, nil
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
