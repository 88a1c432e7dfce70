package deploy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// kubeDefaultGrace is terminationGracePeriodSeconds when a pod spec omits it.
const kubeDefaultGrace = 30 * time.Second

// kubeObject is one document of a manifest file.
type kubeObject struct {
	file string
	obj  map[string]any
}

// kubeManifests is every object of a set of manifest files, with the
// ConfigMaps and Secrets that containers can take variables and files from.
type kubeManifests struct {
	objects    []kubeObject
	configMaps map[string]map[string]any
	// configMapFiles are the ConfigMaps as a volume shows them: data and
	// binaryData, decoded.
	configMapFiles map[string]map[string]string
	secrets        map[string]map[string]string
}

func readKubeManifests(files []string) (*kubeManifests, error) {
	m := &kubeManifests{
		configMaps:     map[string]map[string]any{},
		configMapFiles: map[string]map[string]string{},
		secrets:        map[string]map[string]string{},
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var obj map[string]any
			err := dec.Decode(&obj)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("parsing %s: %w", file, err)
			}
			if obj == nil { // empty document between ---
				continue
			}
			m.objects = append(m.objects, kubeObject{file: file, obj: obj})
			name, _ := lookup(obj, "metadata", "name").(string)
			switch obj["kind"] {
			case "ConfigMap":
				data, _ := obj["data"].(map[string]any)
				m.configMaps[name] = data
				vals := map[string]string{}
				for k, v := range data {
					s, ok := v.(string)
					if !ok {
						return nil, fmt.Errorf("%s: ConfigMap %s key %s: value %v must be a string (quote it)", file, name, k, v)
					}
					vals[k] = s
				}
				bin, _ := obj["binaryData"].(map[string]any)
				for k, v := range bin {
					b, err := base64.StdEncoding.DecodeString(fmt.Sprint(v))
					if err != nil {
						return nil, fmt.Errorf("%s: ConfigMap %s binaryData key %s: %w", file, name, k, err)
					}
					vals[k] = string(b)
				}
				m.configMapFiles[name] = vals
			case "Secret":
				vals := map[string]string{}
				data, _ := obj["data"].(map[string]any)
				for k, v := range data {
					b, err := base64.StdEncoding.DecodeString(fmt.Sprint(v))
					if err != nil {
						return nil, fmt.Errorf("%s: Secret %s key %s: %w", file, name, k, err)
					}
					vals[k] = string(b)
				}
				sd, _ := obj["stringData"].(map[string]any)
				for k, v := range sd {
					vals[k] = fmt.Sprint(v)
				}
				m.secrets[name] = vals
			}
		}
	}
	return m, nil
}

// kubernetesInvocations returns an invocation for every container, in any
// object with a pod template (Deployment, StatefulSet, DaemonSet, Job,
// CronJob, Pod), whose image is fleetgate's.
func kubernetesInvocations(files []string, standInDir string) ([]invocation, error) {
	m, err := readKubeManifests(files)
	if err != nil {
		return nil, err
	}
	var out []invocation
	var errs []error
	external := m.externalServices()
	for _, o := range m.objects {
		kind, _ := o.obj["kind"].(string)
		name, _ := lookup(o.obj, "metadata", "name").(string)
		owner := fmt.Sprintf("%s %s/%s", filepath.Base(o.file), kind, name)
		labels := podLabels(o.obj)
		for _, spec := range podSpecs(o.obj) {
			invs, err := m.podInvocations(owner, name, spec, standInDir)
			errs = append(errs, err)
			for i := range invs {
				for _, svc := range external {
					if svc.selects(labels) {
						invs[i].Exposed = append(invs[i].Exposed, svc.exposes(invs[i].NamedPorts)...)
					}
				}
			}
			out = append(out, invs...)
		}
	}
	return out, errors.Join(errs...)
}

// externalService is a Service reachable from outside the cluster: type
// LoadBalancer or NodePort, or one with external IPs.
type externalService struct {
	name     string // "file Service/name"
	selector map[string]any
	ports    []any
}

func (m *kubeManifests) externalServices() []externalService {
	var out []externalService
	for _, o := range m.objects {
		if o.obj["kind"] != "Service" {
			continue
		}
		typ, _ := lookup(o.obj, "spec", "type").(string)
		ips, _ := lookup(o.obj, "spec", "externalIPs").([]any)
		if typ != "LoadBalancer" && typ != "NodePort" && len(ips) == 0 {
			continue
		}
		name, _ := lookup(o.obj, "metadata", "name").(string)
		sel, _ := lookup(o.obj, "spec", "selector").(map[string]any)
		ports, _ := lookup(o.obj, "spec", "ports").([]any)
		out = append(out, externalService{name: fmt.Sprintf("%s Service/%s", filepath.Base(o.file), name), selector: sel, ports: ports})
	}
	return out
}

// selects reports whether the Service sends traffic to pods with labels.
func (s externalService) selects(labels map[string]any) bool {
	if len(s.selector) == 0 {
		return false // endpoints managed by hand: not these pods
	}
	for k, v := range s.selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// exposes resolves the Service's target ports against a container's named
// ports: a name the container does not have is not its, a number is the
// pod's whatever the container declares.
func (s externalService) exposes(named map[string]int) []exposure {
	var out []exposure
	for _, p := range s.ports {
		pm, _ := p.(map[string]any)
		port, _ := pm["port"].(int)
		target := port
		switch t := pm["targetPort"].(type) {
		case int:
			target = t
		case string:
			n, ok := named[t]
			if !ok {
				continue
			}
			target = n
		}
		pname, _ := pm["name"].(string)
		out = append(out, exposure{Service: fmt.Sprintf("%s port %s (%d)", s.name, pname, port), Port: target})
	}
	return out
}

// podLabels are the labels of the pods an object runs: a Pod's own, or its
// template's.
func podLabels(obj map[string]any) map[string]any {
	if obj["kind"] == "Pod" {
		l, _ := lookup(obj, "metadata", "labels").(map[string]any)
		return l
	}
	for _, path := range [][]string{
		{"spec", "template", "metadata", "labels"},
		{"spec", "jobTemplate", "spec", "template", "metadata", "labels"},
	} {
		if l, ok := lookup(obj, path...).(map[string]any); ok {
			return l
		}
	}
	return nil
}

// podSpecs finds every pod spec (a mapping with a containers list) in obj.
func podSpecs(v any) []map[string]any {
	switch x := v.(type) {
	case map[string]any:
		if _, ok := x["containers"].([]any); ok {
			return []map[string]any{x}
		}
		var out []map[string]any
		for _, k := range sortedKeys(x) {
			out = append(out, podSpecs(x[k])...)
		}
		return out
	case []any:
		var out []map[string]any
		for _, e := range x {
			out = append(out, podSpecs(e)...)
		}
		return out
	}
	return nil
}

func (m *kubeManifests) podInvocations(owner, objName string, spec map[string]any, standInDir string) ([]invocation, error) {
	volumes := map[string]map[string]any{}
	vlist, _ := spec["volumes"].([]any)
	for _, v := range vlist {
		vm, _ := v.(map[string]any)
		if name, ok := vm["name"].(string); ok {
			volumes[name] = vm
		}
	}
	grace := kubeDefaultGrace
	if g, ok := spec["terminationGracePeriodSeconds"]; ok {
		n, ok := g.(int)
		if !ok {
			return nil, fmt.Errorf("%s: terminationGracePeriodSeconds %v is not an integer", owner, g)
		}
		grace = time.Duration(n) * time.Second
	}
	var out []invocation
	var errs []error
	for _, key := range []string{"initContainers", "containers"} {
		list, _ := spec[key].([]any)
		for _, c := range list {
			ctr, ok := c.(map[string]any)
			if !ok {
				continue
			}
			image, _ := ctr["image"].(string)
			if !isFleetgateImage(image) {
				continue
			}
			cname, _ := ctr["name"].(string)
			source := fmt.Sprintf("%s container %s", owner, cname)
			inv, err := m.containerInvocation(source, objName, ctr, grace, volumes, standInDir)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, inv)
		}
	}
	return out, errors.Join(errs...)
}

func (m *kubeManifests) containerInvocation(source, objName string, ctr map[string]any, grace time.Duration, volumes map[string]map[string]any, standInDir string) (invocation, error) {
	inv := invocation{Source: source, Env: map[string]string{}}
	fail := func(format string, args ...any) (invocation, error) {
		return inv, fmt.Errorf("%s: %s", source, fmt.Sprintf(format, args...))
	}

	// envFrom first; env entries override it, and each may refer to the
	// variables defined before it with $(NAME).
	envFrom, _ := ctr["envFrom"].([]any)
	for _, e := range envFrom {
		src, _ := e.(map[string]any)
		prefix, _ := src["prefix"].(string)
		if ref, ok := src["configMapRef"].(map[string]any); ok {
			name, _ := ref["name"].(string)
			data, found := m.configMaps[name]
			if !found {
				if optional, _ := ref["optional"].(bool); optional {
					continue
				}
				return fail("envFrom configMapRef %s is not defined in the manifests, so its variables cannot be checked", name)
			}
			for _, k := range sortedKeys(data) {
				s, ok := data[k].(string)
				if !ok {
					return fail("ConfigMap %s key %s: value %v must be a string (quote it)", name, k, data[k])
				}
				inv.Env[prefix+k] = s
			}
		}
		if ref, ok := src["secretRef"].(map[string]any); ok {
			name, _ := ref["name"].(string)
			data, found := m.secrets[name]
			if !found {
				if optional, _ := ref["optional"].(bool); optional {
					continue
				}
				return fail("envFrom secretRef %s is not defined in the manifests, so its variable names cannot be checked; use env with secretKeyRef", name)
			}
			for k, v := range data {
				inv.Env[prefix+k] = v
			}
		}
	}

	resources, _ := ctr["resources"].(map[string]any)
	envList, _ := ctr["env"].([]any)
	for _, e := range envList {
		ev, _ := e.(map[string]any)
		name, _ := ev["name"].(string)
		if v, ok := ev["value"]; ok {
			s, ok := v.(string)
			if !ok {
				return fail("env %s: value %v must be a string (quote it)", name, v)
			}
			inv.Env[name] = expandKube(s, inv.Env)
			continue
		}
		from, ok := ev["valueFrom"].(map[string]any)
		if !ok {
			inv.Env[name] = ""
			continue
		}
		v, set, err := m.valueFrom(objName, name, from, resources)
		if err != nil {
			return fail("env %s: %v", name, err)
		}
		if set {
			inv.Env[name] = v
		}
	}

	var argv []string
	for _, key := range []string{"command", "args"} {
		list, _ := ctr[key].([]any)
		for _, a := range list {
			s, ok := a.(string)
			if !ok {
				return fail("%s entry %v must be a string (quote it)", key, a)
			}
			argv = append(argv, expandKube(s, inv.Env))
		}
	}
	if len(argv) == 0 {
		return fail(`no command; name the binary it runs, e.g. command: ["/usr/local/bin/frontend"]`)
	}
	inv.Binary, inv.Args = path.Base(argv[0]), argv[1:]

	// The grace period also covers the preStop hook, which runs before SIGTERM.
	inv.Grace = grace
	if s, ok := lookup(ctr, "lifecycle", "preStop", "sleep", "seconds").(int); ok {
		inv.Grace -= time.Duration(s) * time.Second
	}
	if inv.Grace <= 0 {
		return fail("the preStop hook takes the whole termination grace period")
	}

	ports := map[string]int{}
	portList, _ := ctr["ports"].([]any)
	for _, p := range portList {
		pm, _ := p.(map[string]any)
		name, _ := pm["name"].(string)
		n, _ := pm["containerPort"].(int)
		if name != "" {
			ports[name] = n
		}
	}
	inv.NamedPorts = ports
	for _, kind := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
		get, ok := lookup(ctr, kind, "httpGet").(map[string]any)
		if !ok {
			continue
		}
		p := probe{Kind: kind}
		p.Path, _ = get["path"].(string)
		switch port := get["port"].(type) {
		case int:
			p.Port = port
		case string:
			if p.Port, ok = ports[port]; !ok {
				return fail("%s port %q is not a named port of the container", kind, port)
			}
		default:
			return fail("%s has no port", kind)
		}
		inv.Probes = append(inv.Probes, p)
	}

	mounts, err := m.mounts(ctr, volumes, standInDir)
	if err != nil {
		return fail("%v", err)
	}
	if err := newStandIns(standInDir, mounts).apply(&inv); err != nil {
		return fail("%v", err)
	}
	return inv, nil
}

// mounts resolves a container's volumeMounts against its pod's volumes. A
// Secret or ConfigMap volume whose object the manifests hold is written out
// under dir as the kubelet lays it out (every key, or the items), so the
// binary reads the manifest's real content; any other volume (a Secret
// created with kubectl, an emptyDir) gets a stand-in.
func (m *kubeManifests) mounts(ctr map[string]any, volumes map[string]map[string]any, dir string) ([]mount, error) {
	var mounts []mount
	vms, _ := ctr["volumeMounts"].([]any)
	for _, vm := range vms {
		vmm, _ := vm.(map[string]any)
		name, _ := vmm["name"].(string)
		target, _ := vmm["mountPath"].(string)
		if target == "" {
			continue
		}
		vol, ok := volumes[name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: the pod has no volume %s", target, name)
		}
		files, found, err := m.volumeFiles(vol)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", name, err)
		}
		mt := mount{Target: target}
		if found {
			if mt.Source, err = writeVolume(filepath.Join(dir, "volumes"), name, files); err != nil {
				return nil, err
			}
			// A subPath mounts one entry of the volume at mountPath.
			if sub, _ := vmm["subPath"].(string); sub != "" {
				if !filepath.IsLocal(sub) {
					return nil, fmt.Errorf("volumeMount %s: subPath %q must be relative", target, sub)
				}
				mt.Source = filepath.Join(mt.Source, sub)
			}
		}
		mounts = append(mounts, mt)
	}
	return mounts, nil
}

// volumeFiles returns the files of a secret or configMap volume whose object
// is in the manifests (relative path → contents); found is false for any
// other volume. With items, only those keys appear, at their paths; a key
// the object lacks fails the pod, and so the check.
func (m *kubeManifests) volumeFiles(vol map[string]any) (files map[string]string, found bool, err error) {
	var (
		data map[string]string
		src  map[string]any
		what string
	)
	if s, ok := vol["secret"].(map[string]any); ok {
		name, _ := s["secretName"].(string)
		data, found, src, what = m.secrets[name], m.secrets[name] != nil, s, "Secret "+name
	} else if c, ok := vol["configMap"].(map[string]any); ok {
		name, _ := c["name"].(string)
		data, found, src, what = m.configMapFiles[name], m.configMapFiles[name] != nil, c, "ConfigMap "+name
	}
	if !found {
		return nil, false, nil
	}
	items, _ := src["items"].([]any)
	if len(items) == 0 {
		return data, true, nil
	}
	files = map[string]string{}
	for _, it := range items {
		im, _ := it.(map[string]any)
		key, _ := im["key"].(string)
		p, _ := im["path"].(string)
		v, ok := data[key]
		if !ok {
			return nil, true, fmt.Errorf("items: %s has no key %s", what, key)
		}
		files[p] = v
	}
	return files, true, nil
}

// secretStandIns are the values that stand in for a variable taken from a
// Secret the manifests do not hold, where the binary checks the value's
// form; any other such variable gets "secret-<name>-<key>".
var secretStandIns = map[string]string{
	"FLEETGATE_ARCHIVE_MONGODB_URI": "mongodb://archiver:secret@mongodb.example:27017/?authSource=admin",
}

// valueFrom resolves the valueFrom of the env variable named env the way the
// kubelet would for a pod of the object named objName. set is false for an
// optional reference that is absent, which leaves the variable unset.
func (m *kubeManifests) valueFrom(objName, env string, from, resources map[string]any) (value string, set bool, err error) {
	if ref, ok := from["fieldRef"].(map[string]any); ok {
		fp, _ := ref["fieldPath"].(string)
		switch {
		case fp == "metadata.name":
			return objName + "-7c9d8b6f5d-x2x7q", true, nil // a Deployment pod's name
		case fp == "metadata.namespace":
			return "fleetgate", true, nil
		case fp == "metadata.uid":
			return "8a6f0c1e-8a5b-4a1c-9d51-3f0e7c2b9a10", true, nil
		case fp == "spec.nodeName":
			return "node-1", true, nil
		case fp == "spec.serviceAccountName":
			return "default", true, nil
		case fp == "status.podIP", fp == "status.hostIP", fp == "status.podIPs", fp == "status.hostIPs":
			return "10.0.0.10", true, nil
		case strings.HasPrefix(fp, "metadata.labels["), strings.HasPrefix(fp, "metadata.annotations["):
			return "value", true, nil
		}
		return "", false, fmt.Errorf("fieldRef %q is not known to test/deploy", fp)
	}
	if ref, ok := from["resourceFieldRef"].(map[string]any); ok {
		return resourceValue(ref, resources)
	}
	if ref, ok := from["configMapKeyRef"].(map[string]any); ok {
		name, _ := ref["name"].(string)
		key, _ := ref["key"].(string)
		optional, _ := ref["optional"].(bool)
		v, ok := m.configMaps[name][key]
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("configMapKeyRef %s/%s is not defined in the manifests", name, key)
		}
		s, ok := v.(string)
		if !ok {
			return "", false, fmt.Errorf("ConfigMap %s key %s: value %v must be a string (quote it)", name, key, v)
		}
		return s, true, nil
	}
	if ref, ok := from["secretKeyRef"].(map[string]any); ok {
		name, _ := ref["name"].(string)
		key, _ := ref["key"].(string)
		if v, ok := m.secrets[name][key]; ok {
			return v, true, nil
		}
		// Secrets are usually not committed: stand in a value, so the
		// variable's name and its effect on validation are still checked.
		if v, ok := secretStandIns[env]; ok {
			return v, true, nil
		}
		return "secret-" + name + "-" + key, true, nil
	}
	return "", false, errors.New("valueFrom has no source known to test/deploy")
}

// resourceValue resolves a resourceFieldRef against the container's
// resources, rounded up in units of the divisor, as the kubelet does. An
// absent limit would be the node's capacity; a plausible node stands in.
func resourceValue(ref, resources map[string]any) (string, bool, error) {
	res, _ := ref["resource"].(string)
	kind, name, ok := strings.Cut(res, ".") // limits.memory
	if !ok {
		return "", false, fmt.Errorf("resourceFieldRef %q", res)
	}
	q, _ := lookup(resources, kind, name).(string)
	if q == "" {
		q = map[string]string{"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi"}[name]
	}
	v, err := parseQuantity(q)
	if err != nil {
		return "", false, fmt.Errorf("resourceFieldRef %s: %w", res, err)
	}
	div := 1.0
	if d, ok := ref["divisor"]; ok {
		if div, err = parseQuantity(fmt.Sprint(d)); err != nil || div <= 0 {
			return "", false, fmt.Errorf("resourceFieldRef %s divisor %v: %v", res, d, err)
		}
	}
	return strconv.FormatFloat(math.Ceil(v/div), 'f', 0, 64), true, nil
}

// parseQuantity reads a Kubernetes resource quantity such as 500m, 2Gi or 1e3.
func parseQuantity(s string) (float64, error) {
	suffixes := []struct {
		s string
		m float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18}, {"m", 1e-3},
	}
	mult := 1.0
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf.s) {
			s, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("quantity %q: %w", s, err)
	}
	return v * mult, nil
}

// expandKube applies Kubernetes' $(NAME) expansion in command, args and env
// values: a defined variable is replaced, an undefined reference is kept as
// written, and $$ escapes a dollar sign.
func expandKube(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte('$')
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// lookup walks nested mappings; it returns nil when a key is missing.
func lookup(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
