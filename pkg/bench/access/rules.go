package access

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// The names of the rules file besides the identities.
const (
	// FleetGroup lists every device identity.
	FleetGroup = "fleet"
	// BackendsGroup lists the backend services.
	BackendsGroup = "backends"
	// DeviceTopic is the filter of the devices' own rule, the last of the
	// file: each device may publish (and subscribe) below its own name.
	DeviceTopic = "devices/%u/#"
	// PublishTopic is a topic template (for load's -topic) that the
	// devices' own rule allows to each device and no earlier rule touches.
	PublishTopic = "devices/%u/telemetry"
)

// backends are the identities of BackendsGroup.
var backends = []string{"backend-analytics", "backend-ops", "backend-billing", "backend-bridge"}

// rule is one rule of the file.
type rule struct {
	permission, action string
	topics             []string
	identities, groups []string
}

// site names site group s.
func site(s int) string { return fmt.Sprintf("site-%03d", s) }

// rules returns the rules of the file in order: for everyone, for the
// backends, for the fleet, for each site, for single devices, and last the
// devices' own rule. Only the rules for everyone, for the fleet and for its
// site apply to a device (the file is indexed by identity and group); a
// device's PUBLISH to PublishTopic passes all of them to the last.
func (c *Config) rules() []rule {
	var rs []rule
	add := func(permission, action, topic string, identities, groups []string) {
		rs = append(rs, rule{permission: permission, action: action, topics: []string{topic}, identities: identities, groups: groups})
	}
	// For everyone.
	add("deny", "publish", "$SYS/#", nil, nil)
	add("deny", "all", "admin/#", nil, nil)
	add("allow", "subscribe", "broadcast/#", nil, nil)
	add("deny", "publish", "broadcast/#", nil, nil)
	add("deny", "all", "legacy/#", nil, nil)
	add("allow", "subscribe", "time/#", nil, nil)
	add("deny", "publish", "time/#", nil, nil)
	// The backends read every device, command any, and own their bridges.
	be := []string{BackendsGroup}
	add("allow", "subscribe", "devices/#", nil, be)
	add("allow", "publish", "devices/+/commands/#", nil, be)
	add("allow", "all", "sites/#", nil, be)
	add("allow", "all", "bridge/%c/#", nil, be)
	// The fleet: commands and configuration come in, never go out.
	fl := []string{FleetGroup}
	add("deny", "publish", "devices/+/commands/#", nil, fl)
	add("deny", "publish", "devices/+/config/#", nil, fl)
	add("allow", "subscribe", "devices/%u/commands/#", nil, fl)
	add("allow", "subscribe", "devices/%u/config/#", nil, fl)
	add("allow", "publish", "status/%u", nil, fl)
	// Each site: its broadcasts and configuration, a status topic per
	// device, and no reading of the other devices' status.
	for s := range c.Groups {
		g := []string{site(s)}
		base := "sites/" + site(s)
		add("allow", "subscribe", base+"/broadcast/#", nil, g)
		add("allow", "publish", base+"/%u/status", nil, g)
		add("deny", "subscribe", base+"/+/status", nil, g)
		add("deny", "publish", base+"/config/#", nil, g)
		add("allow", "subscribe", base+"/config/#", nil, g)
	}
	// Single devices from the upper half of the fleet (never the first
	// ones, which the benchmarks connect as): quarantined ones, debug builds
	// and a firmware beta.
	for k := 0; len(rs) < c.Rules-1; k++ {
		half := max(c.Identities/2, 1)
		id := func(j int) string { return c.Identity(c.Identities - half + (k*7919+j*104729)%half) }
		switch k % 3 {
		case 0:
			add("deny", "all", "devices/"+id(0)+"/#", []string{id(0)}, nil)
		case 1:
			add("allow", "publish", "debug/%c/#", []string{id(0)}, nil)
		default:
			add("allow", "subscribe", "firmware/beta/#", []string{id(0), id(1), id(2)}, nil)
		}
	}
	rs = rs[:c.Rules-1]
	add("allow", "all", DeviceTopic, nil, fl)
	return rs
}

// writeRules writes the rules file: the groups (every identity in the
// fleet and in its site, the backends), then the rules.
func (c *Config) writeRules(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	fmt.Fprintf(bw, "# fleetgate-bench access-files: %d device identities in %d sites, %d rules.\n", c.Identities, c.Groups, c.Rules)
	bw.WriteString("groups:\n")
	fmt.Fprintf(bw, "  %s:\n", FleetGroup)
	for i := range c.Identities {
		fmt.Fprintf(bw, "    - %s\n", c.Identity(i))
	}
	for s := range c.Groups {
		fmt.Fprintf(bw, "  %s:\n", site(s))
		for i := s; i < c.Identities; i += c.Groups {
			fmt.Fprintf(bw, "    - %s\n", c.Identity(i))
		}
	}
	fmt.Fprintf(bw, "  %s: [%s]\n", BackendsGroup, strings.Join(backends, ", "))
	bw.WriteString("rules:\n")
	for _, r := range c.rules() {
		fmt.Fprintf(bw, "  - {permission: %s, action: %s, topics: [%s]", r.permission, r.action, quoteAll(r.topics))
		if len(r.identities) > 0 {
			fmt.Fprintf(bw, ", identities: [%s]", strings.Join(r.identities, ", "))
		}
		if len(r.groups) > 0 {
			fmt.Fprintf(bw, ", groups: [%s]", strings.Join(r.groups, ", "))
		}
		bw.WriteString("}\n")
	}
	return bw.Flush()
}

// quoteAll double-quotes each topic filter: in YAML an unquoted # starts a
// comment. The filters are ASCII, so Go's quoting is YAML's.
func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
