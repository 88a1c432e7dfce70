package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// alertRules is deploy/prometheus/alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// instrument is how the code registers one metric: its kind, read from the
// call that names it.
type instrument string

const (
	counterKind   instrument = "counter"
	histogramKind instrument = "histogram"
	gaugeKind     instrument = "gauge"
)

// registeredMetrics finds every fleetgate_* instrument the code under pkg/
// registers, with its kind: the name is a string literal in a call whose
// line, or the line before, says Counter/counter, Histogram or Gauge, or
// on a line of its own that calls Hot (telemetry.Counters.Hot, a counter).
func registeredMetrics(t *testing.T, root string) map[string]instrument {
	t.Helper()
	name := regexp.MustCompile(`"(fleetgate_[a-z0-9_]+)"`)
	out := map[string]instrument{}
	err := filepath.WalkDir(filepath.Join(root, "pkg"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines := strings.Split(string(data), "\n")
		for i, l := range lines {
			for _, m := range name.FindAllStringSubmatch(l, -1) {
				ctx := l
				if i > 0 {
					ctx = lines[i-1] + l
				}
				switch {
				case strings.Contains(ctx, "Histogram"):
					out[m[1]] = histogramKind
				case strings.Contains(ctx, "Gauge"):
					out[m[1]] = gaugeKind
				case strings.Contains(ctx, "Counter") || strings.Contains(ctx, "counter(") || strings.Contains(l, ".Hot("):
					out[m[1]] = counterKind
				}
			}
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// metricsIn returns the fleetgate_* series an expression reads.
func metricsIn(expr string) []string {
	return regexp.MustCompile(`fleetgate_[a-z0-9_]+`).FindAllString(expr, -1)
}

// TestAlertRulesNameMetricsTheProcessesExport reads the alerting rules and
// checks each against the code: every series is a fleetgate instrument as
// Prometheus sees it (a counter with _total, a histogram's _bucket, _sum or
// _count, a gauge as it is), and every rule says how bad it is and what it
// means. A rule on a renamed or misspelt metric would never fire.
func TestAlertRulesNameMetricsTheProcessesExport(t *testing.T) {
	root := fleetgate.root
	data, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "alerts.yml"))
	require.NoError(t, err)
	var rules alertRules
	require.NoError(t, yaml.Unmarshal(data, &rules))
	known := registeredMetrics(t, root)
	require.Contains(t, known, "fleetgate_dispatch_lag_records", "the scan of the code finds instruments")
	require.Equal(t, counterKind, known["fleetgate_dispatch_route_errors"])
	require.Equal(t, histogramKind, known["fleetgate_ingest_produce_latency_seconds"])

	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			assert.NotEmpty(t, r.Alert, "group %s: a rule without a name", g.Name)
			assert.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], "%s: severity", r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
			assert.NotEmpty(t, r.Annotations["description"], "%s: description", r.Alert)
			for _, series := range metricsIn(r.Expr) {
				assert.True(t, exported(known, series), "%s reads %s, which no fleetgate process exports", r.Alert, series)
			}
		}
	}
	assert.Positive(t, n)
	for _, bad := range []string{"fleetgate_dispatch_route_errors", "fleetgate_dispatch_lag_records_total",
		"fleetgate_ingest_produce_latency_seconds", "fleetgate_dispatch_routes_errors_total"} {
		assert.False(t, exported(known, bad), "the check must refuse %s", bad)
	}
}

// exported reports whether series is how Prometheus shows a registered
// instrument.
func exported(known map[string]instrument, series string) bool {
	if base, ok := strings.CutSuffix(series, "_total"); ok && known[base] == counterKind {
		return true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, s); ok && known[base] == histogramKind {
			return true
		}
	}
	return known[series] == gaugeKind
}

// TestPrometheusLoadsTheAlertRules checks that the Prometheus configuration
// names the rules file and that docker-compose.yml mounts it beside it.
func TestPrometheusLoadsTheAlertRules(t *testing.T) {
	root := fleetgate.root
	data, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "prometheus.yml"))
	require.NoError(t, err)
	var cfg struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	require.Contains(t, cfg.RuleFiles, "/etc/prometheus/alerts.yml")
	compose, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	assert.Contains(t, string(compose), "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro")
}
