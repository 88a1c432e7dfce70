package deploy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// composeDefaultGrace is what `docker compose stop` waits without stop_grace_period.
const composeDefaultGrace = 10 * time.Second

// composeInvocations returns an invocation for every service of a compose
// file that runs fleetgate: a service built from this repository (it has a
// `build` key) or one that runs a fleetgate image. Bind mounts of relative
// paths, and secrets and configs from a file, are resolved against the
// file's directory, as compose does, so the binary reads the real files;
// standInDir receives the stand-ins for other mounted files (see standIns).
func composeInvocations(file, standInDir string) ([]invocation, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", file, err)
	}
	services, ok := doc["services"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: no services", file)
	}
	project := composeProject{dir: filepath.Dir(file)}
	project.secrets, _ = doc["secrets"].(map[string]any)
	project.configs, _ = doc["configs"].(map[string]any)
	var out []invocation
	var errs []error
	for _, name := range sortedKeys(services) {
		svc, ok := services[name].(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s service %s: not a mapping", file, name))
			continue
		}
		_, built := svc["build"]
		image, _ := svc["image"].(string)
		if !built && !isFleetgateImage(image) {
			continue
		}
		inv, err := project.service(fmt.Sprintf("%s service %s", path.Base(file), name), svc, standInDir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, inv)
	}
	return out, errors.Join(errs...)
}

// composeProject is what a service's mounts refer to: the directory that
// relative paths start from and the top-level secrets and configs.
type composeProject struct {
	dir              string
	secrets, configs map[string]any
}

func (p composeProject) service(source string, svc map[string]any, standInDir string) (invocation, error) {
	inv := invocation{Source: source, Env: map[string]string{}, Grace: composeDefaultGrace}
	if _, ok := svc["env_file"]; ok {
		// The files would have to be read and checked as well; keep fleetgate
		// settings inline in `environment:` where this test sees them.
		return inv, fmt.Errorf("%s: env_file is not supported by test/deploy; put FLEETGATE_* variables in environment:", source)
	}

	var argv []string
	for _, key := range []string{"entrypoint", "command"} {
		words, err := composeWords(svc[key])
		if err != nil {
			return inv, fmt.Errorf("%s: %s: %w", source, key, err)
		}
		argv = append(argv, words...)
	}
	if len(argv) == 0 {
		return inv, fmt.Errorf("%s: no command; name the binary it runs, e.g. command: [\"/usr/local/bin/frontend\"]", source)
	}
	inv.Binary, inv.Args = path.Base(argv[0]), argv[1:]

	switch env := svc["environment"].(type) {
	case nil:
	case map[string]any:
		for k, v := range env {
			if v == nil { // NAME: with no value passes the host's variable through
				inv.Inherited = append(inv.Inherited, k)
				continue
			}
			s, err := interpolate(fmt.Sprint(v))
			if err != nil {
				return inv, fmt.Errorf("%s: environment %s: %w", source, k, err)
			}
			inv.Env[k] = s
		}
	case []any:
		for _, e := range env {
			s, ok := e.(string)
			if !ok {
				return inv, fmt.Errorf("%s: environment entry %v is not a string", source, e)
			}
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				inv.Inherited = append(inv.Inherited, k)
				continue
			}
			v, err := interpolate(v)
			if err != nil {
				return inv, fmt.Errorf("%s: environment %s: %w", source, k, err)
			}
			inv.Env[k] = v
		}
	default:
		return inv, fmt.Errorf("%s: environment is neither a mapping nor a list", source)
	}

	if g, ok := svc["stop_grace_period"]; ok {
		d, err := time.ParseDuration(fmt.Sprint(g))
		if err != nil {
			return inv, fmt.Errorf("%s: stop_grace_period: %w", source, err)
		}
		inv.Grace = d
	}

	mounts, err := p.mounts(svc)
	if err != nil {
		return inv, fmt.Errorf("%s: %w", source, err)
	}
	if err := newStandIns(standInDir, mounts).apply(&inv); err != nil {
		return inv, fmt.Errorf("%s: %w", source, err)
	}
	return inv, nil
}

// composeWords reads a command or entrypoint: a list, or a string split on
// white space (quotes are refused rather than parsed half right).
func composeWords(v any) ([]string, error) {
	var words []string
	switch c := v.(type) {
	case nil:
		return nil, nil
	case string:
		if strings.ContainsAny(c, `"'\`) {
			return nil, errors.New("quoting in the string form is not supported by test/deploy; use the list form")
		}
		words = strings.Fields(c)
	case []any:
		for _, w := range c {
			words = append(words, fmt.Sprint(w))
		}
	default:
		return nil, fmt.Errorf("%v is neither a string nor a list", v)
	}
	for i, w := range words {
		s, err := interpolate(w)
		if err != nil {
			return nil, err
		}
		words[i] = s
	}
	return words, nil
}

// mounts lists the mounts of a service's volumes, secrets and configs. A
// bind mount of a relative path (./deploy/auth) and a secret or config taken
// from a relative file get their Source in the project directory; a named
// volume, an absolute or home-relative host path (not part of the
// repository) and anything else get a stand-in.
func (p composeProject) mounts(svc map[string]any) ([]mount, error) {
	var mounts []mount
	vols, _ := svc["volumes"].([]any)
	for _, v := range vols {
		switch m := v.(type) {
		case string: // source:target[:mode] or just target
			parts := strings.Split(m, ":")
			if len(parts) == 1 {
				mounts = append(mounts, mount{Target: parts[0]})
				continue
			}
			src, err := interpolate(parts[0])
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", m, err)
			}
			mounts = append(mounts, mount{Target: parts[1], Source: p.local(src)})
		case map[string]any:
			t, _ := m["target"].(string)
			mt := mount{Target: t}
			if typ, _ := m["type"].(string); typ == "bind" {
				src, err := interpolate(fmt.Sprint(m["source"]))
				if err != nil {
					return nil, fmt.Errorf("volume %v: %w", m, err)
				}
				mt.Source = p.local(src)
			}
			mounts = append(mounts, mt)
		default:
			return nil, fmt.Errorf("volume %v: neither a string nor a mapping", v)
		}
	}
	// Secrets land in /run/secrets/<name> and configs in /<name> unless a target says otherwise.
	for _, kind := range []struct {
		key, dir string
		top      map[string]any
	}{{"secrets", "/run/secrets", p.secrets}, {"configs", "/", p.configs}} {
		list, _ := svc[kind.key].([]any)
		for _, v := range list {
			var name, t string
			switch m := v.(type) {
			case string:
				name = m
			case map[string]any:
				name, _ = m["source"].(string)
				t, _ = m["target"].(string)
			default:
				continue
			}
			if t == "" {
				t = name
			}
			if !path.IsAbs(t) {
				t = path.Join(kind.dir, t)
			}
			mt := mount{Target: t}
			if file, ok := lookup(kind.top, name, "file").(string); ok {
				mt.Source = p.local(file)
			}
			mounts = append(mounts, mt)
		}
	}
	return mounts, nil
}

// local is where a relative host path of the compose file is on this
// machine; "" for any other path.
func (p composeProject) local(hostPath string) string {
	if hostPath != "." && hostPath != ".." && !strings.HasPrefix(hostPath, "./") && !strings.HasPrefix(hostPath, "../") {
		return ""
	}
	return filepath.Join(p.dir, filepath.FromSlash(hostPath))
}

// interpolate applies compose's variable substitution as `docker compose up`
// in a shell without those variables would: $$ is a dollar sign, and
// ${NAME:-default} / ${NAME-default} take the default. A variable without a
// default would depend on the operator's shell, so it is an error.
func interpolate(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch next := s[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i++
		case next == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			expr := s[i+2 : i+2+end]
			i += 2 + end
			n := 0
			for n < len(expr) && isNameChar(expr[n]) {
				n++
			}
			switch op := expr[n:]; {
			case strings.HasPrefix(op, ":-"):
				b.WriteString(op[2:])
			case strings.HasPrefix(op, "-"):
				b.WriteString(op[1:])
			case strings.HasPrefix(op, ":+"), strings.HasPrefix(op, "+"):
				// ${NAME:+alt} is empty while NAME is unset.
			default: // ${NAME}, ${NAME:?message}
				return "", fmt.Errorf("%q takes ${%s} from the host shell; give it a default (${%s:-value}) so the file works as committed", s, expr, expr[:n])
			}
		case isNameChar(next) && !('0' <= next && next <= '9'):
			return "", fmt.Errorf("%q takes a variable from the host shell; use ${NAME:-default}", s)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func isNameChar(c byte) bool {
	return c == '_' || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') || ('0' <= c && c <= '9')
}

// isFleetgateImage reports whether an image reference names fleetgate's
// image (any registry, any tag): its last path element is "fleetgate".
func isFleetgateImage(ref string) bool {
	if ref == "" {
		return false
	}
	ref, _, _ = strings.Cut(ref, "@")
	name := ref[strings.LastIndexByte(ref, '/')+1:]
	name, _, _ = strings.Cut(name, ":")
	return name == "fleetgate"
}

// loopbackOnly checks that a compose ports entry publishes on the host's
// loopback interface only: docker publishes on every interface of the host
// unless told otherwise, which on a laptop puts the dev stack's Redis,
// Kafka and MongoDB (no passwords) and its MQTT demo users on the network it
// is on.
func loopbackOnly(entry any) error {
	var hostIP, shown string
	switch p := entry.(type) {
	case map[string]any: // long syntax
		hostIP, _ = p["host_ip"].(string)
		shown = fmt.Sprintf("target %v", p["target"])
	default: // short syntax: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]
		shown = fmt.Sprint(p)
		spec, _, _ := strings.Cut(shown, "/")
		if rest, ok := strings.CutPrefix(spec, "["); ok { // [::1]:1883:1883
			hostIP, _, _ = strings.Cut(rest, "]")
		} else if parts := strings.Split(spec, ":"); len(parts) == 3 {
			hostIP = parts[0]
		}
	}
	if ip := net.ParseIP(hostIP); hostIP == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	if hostIP == "" {
		hostIP = "every interface"
	}
	return fmt.Errorf("ports %q publishes on %s of the host, where anyone on its network reaches it; publish on 127.0.0.1 (\"127.0.0.1:HOST_PORT:CONTAINER_PORT\")", shown, hostIP)
}

// composeWiring checks what `docker compose up` itself would refuse, or get
// wrong, between the services of a compose file: a depends_on naming no
// service, a service_healthy condition on a service without a healthcheck
// (compose fails the dependent with "has no healthcheck configured"), a
// named volume missing from the top-level volumes; and a port published
// beyond the host's loopback interface (loopbackOnly).
func composeWiring(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parsing %s: %w", file, err)
	}
	var errs []error
	for _, name := range sortedKeys(doc.Services) {
		svc := doc.Services[name]
		deps := map[string]string{} // service → condition
		switch d := svc["depends_on"].(type) {
		case nil:
		case []any:
			for _, s := range d {
				deps[fmt.Sprint(s)] = "service_started"
			}
		case map[string]any:
			for s, v := range d {
				cond, _ := lookup(v, "condition").(string)
				if cond == "" {
					cond = "service_started"
				}
				deps[s] = cond
			}
		default:
			errs = append(errs, fmt.Errorf("service %s: depends_on is neither a list nor a mapping", name))
		}
		for _, dep := range sortedKeys(deps) {
			target, ok := doc.Services[dep]
			if !ok {
				errs = append(errs, fmt.Errorf("service %s depends on %s, which is not a service", name, dep))
				continue
			}
			disabled, _ := lookup(target, "healthcheck", "disable").(bool)
			if deps[dep] == "service_healthy" && (target["healthcheck"] == nil || disabled) {
				errs = append(errs, fmt.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep))
			}
		}
		ports, _ := svc["ports"].([]any)
		for _, p := range ports {
			if err := loopbackOnly(p); err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", name, err))
			}
		}
		vols, _ := svc["volumes"].([]any)
		for _, v := range vols {
			var source string
			switch m := v.(type) {
			case string:
				if parts := strings.Split(m, ":"); len(parts) > 1 {
					source = parts[0]
				}
			case map[string]any:
				if t, _ := m["type"].(string); t == "volume" || t == "" {
					source, _ = m["source"].(string)
				}
			}
			// Bind mounts start with . / or ~; anything else names a volume.
			if source == "" || strings.ContainsAny(source[:1], "./~$") {
				continue
			}
			if _, ok := doc.Volumes[source]; !ok {
				errs = append(errs, fmt.Errorf("service %s mounts volume %s, which the top-level volumes do not declare", name, source))
			}
		}
	}
	return errors.Join(errs...)
}
