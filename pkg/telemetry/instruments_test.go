package telemetry

import (
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

func TestAHotCounterIsServedAsACounterWithItsSeries(t *testing.T) {
	m := newTestMetrics(t)
	c := NewCounters(m.Provider.Meter("github.com/fleetgate/fleetgate/pkg/telemetry/test"))
	byQoS := c.Hot("fleetgate_test_hot_sent", "Messages sent by the test, by QoS.",
		attribute.NewSet(attribute.Int("qos", 0)), attribute.NewSet(attribute.Int("qos", 1)))
	plain := c.Hot("fleetgate_test_hot_acked", "Messages acknowledged in the test.")
	require.NoError(t, c.Err())

	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				byQoS.AddAt(1, 1)
				plain.Add(2)
			}
		}()
	}
	wg.Wait()
	byQoS.AddAt(0, 5)

	s := NewServer(ServerConfig{}, m, testkit.DiscardLogger())
	code, body := get(t, s.Handler(), "/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "# TYPE fleetgate_test_hot_sent_total counter")
	assert.Contains(t, body, "# HELP fleetgate_test_hot_sent_total Messages sent by the test, by QoS.")
	assert.Contains(t, body, `fleetgate_test_hot_sent_total{qos="0"} 5`)
	assert.Contains(t, body, `fleetgate_test_hot_sent_total{qos="1"} 8000`)
	assert.Contains(t, body, "fleetgate_test_hot_acked_total 16000")
	assert.Equal(t, int64(8000), byQoS.Value(1))

	plain.Add(1)
	_, body = get(t, s.Handler(), "/metrics")
	assert.Contains(t, body, "fleetgate_test_hot_acked_total 16001", "each collection reads the sums anew")
}
