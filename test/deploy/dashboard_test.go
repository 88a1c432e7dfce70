package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDashboardReadsMetricsTheProcessesExport reads the Grafana dashboard
// and checks every query against the code, as the alerting rules are: a
// panel on a renamed or misspelt metric would stay empty. Every panel has
// a title, a description and at least one query.
func TestDashboardReadsMetricsTheProcessesExport(t *testing.T) {
	root := fleetgate.root
	data, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "fleetgate.json"))
	require.NoError(t, err)
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title       string `json:"title"`
			Description string `json:"description"`
			Targets     []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	require.NotEmpty(t, dash.UID)
	require.NotEmpty(t, dash.Panels)
	known := registeredMetrics(t, root)
	for _, p := range dash.Panels {
		assert.NotEmpty(t, p.Title)
		assert.NotEmpty(t, p.Description, "%s: description", p.Title)
		require.NotEmpty(t, p.Targets, "%s: no query", p.Title)
		for _, q := range p.Targets {
			series := metricsIn(q.Expr)
			assert.NotEmpty(t, series, "%s: %s reads no fleetgate series", p.Title, q.Expr)
			for _, s := range series {
				assert.True(t, exported(known, s), "%s reads %s, which no fleetgate process exports", p.Title, s)
			}
		}
	}
}
