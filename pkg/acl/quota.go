package acl

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Quota is the publish quota a rules file sets for a subject (the file's
// "quotas" section): each field overrides the node's default for it
// (ingest.client-rate, client-burst, client-byte-rate) when set. 0 in Rate
// or ByteRate means no bound.
type Quota struct {
	// Rate is publishes per second; Burst how many may come at once.
	Rate  *float64
	Burst *int
	// ByteRate is payload and topic bytes per second.
	ByteRate *int64
}

// fileQuota is an entry of the quotas section with whom it applies to.
type fileQuota struct {
	Quota
	identities []string
	groups     []string
}

// quotaFields are the fields of a quotas entry.
var quotaFields = []string{"identities", "groups", "publish-rate", "publish-burst", "publish-byte-rate"}

// quotas reads the quotas section: a list of entries, the first that applies
// to a subject deciding.
func (p *fileParser) quotas(n *yaml.Node) ([]fileQuota, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorf(n, "quotas", "want a list of quotas")
	}
	out := make([]fileQuota, 0, len(n.Content))
	for i, item := range n.Content {
		path := fmt.Sprintf("quotas[%d]", i)
		fields, err := p.mapping(resolve(item), path, quotaFields...)
		if err != nil {
			return nil, err
		}
		var q fileQuota
		if q.identities, q.groups, err = p.scope(fields, path); err != nil {
			return nil, err
		}
		set := 0
		if v := fields["publish-rate"]; v != nil {
			s, err := p.scalar(v, path+".publish-rate")
			if err != nil {
				return nil, err
			}
			r, err := strconv.ParseFloat(s, 64)
			if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
				return nil, p.errorf(v, path+".publish-rate", "%q is not a rate: want publishes per second, 0 for no bound", s)
			}
			q.Rate, set = &r, set+1
		}
		if v := fields["publish-burst"]; v != nil {
			s, err := p.scalar(v, path+".publish-burst")
			if err != nil {
				return nil, err
			}
			b, err := strconv.Atoi(s)
			if err != nil || b < 1 {
				return nil, p.errorf(v, path+".publish-burst", "%q is not a burst: want a whole number of publishes, at least 1", s)
			}
			q.Burst, set = &b, set+1
		}
		if v := fields["publish-byte-rate"]; v != nil {
			s, err := p.scalar(v, path+".publish-byte-rate")
			if err != nil {
				return nil, err
			}
			b, err := parseByteRate(s)
			if err != nil {
				return nil, p.wrap(v, path+".publish-byte-rate", err)
			}
			q.ByteRate, set = &b, set+1
		}
		if set == 0 {
			return nil, p.errorf(item, path, "sets no quota: want publish-rate, publish-burst or publish-byte-rate")
		}
		out = append(out, q)
	}
	return out, nil
}

// parseByteRate reads bytes per second: a whole number with an optional
// KiB, MiB or GiB suffix; 0 for no bound, else at least 1 KiB (a smaller
// burst could not take one packet of a usual size).
func parseByteRate(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if len(s) > len(u.suffix) && s[len(s)-len(u.suffix):] == u.suffix {
			s, mult = s[:len(s)-len(u.suffix)], u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult || (v > 0 && v*mult < 1<<10) {
		return 0, fmt.Errorf("%q is not a byte rate: want bytes per second (examples: 65536, 512KiB, 8MiB), 0 for no bound or at least 1KiB", s)
	}
	return v * mult, nil
}

// quotaOf returns the quota of the first entry of the quotas section that
// applies to a subject with identity id, in groups (the file's groups of id
// added), and false when none does.
func (r *Rules) quotaOf(id string, groups []string) *Quota {
	if len(r.quotas) == 0 {
		return nil
	}
	_, fileGroups, _ := r.identities.lookup(id)
	inFileGroup := func(name string) bool {
		g, ok := r.groupIdx[name]
		return ok && slices.Contains(fileGroups, g)
	}
	for i := range r.quotas {
		q := &r.quotas[i]
		if len(q.identities) == 0 && len(q.groups) == 0 {
			return &q.Quota
		}
		if id != "" && slices.Contains(q.identities, id) {
			return &q.Quota
		}
		for _, g := range q.groups {
			if inFileGroup(g) || slices.Contains(groups, g) {
				return &q.Quota
			}
		}
	}
	return nil
}

// Quota returns the publish quota the rules file sets for the subject, and
// false when it sets none (the node's defaults apply). It follows the
// holder's reloads, like the decisions; Generation tells when they
// changed.
func (p *Policy) Quota() (Quota, bool) {
	d := p.current()
	if d.quota == nil {
		return Quota{}, false
	}
	return *d.quota, true
}
