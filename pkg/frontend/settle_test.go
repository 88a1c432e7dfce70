package frontend_test

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
)

// A frontend answers a SUBSCRIBE subscriptions.settle after Kafka took the
// change, and its change records say so (fg.settle), for the dispatchers
// that trust a check of their index that long: with the default, and with
// a longer value, whose wait the SUBACK's delay shows.
func TestASubackWaitsTheSettleAndTheChangeAnnouncesIt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		settle time.Duration // 0: the default
		want   string
	}{
		{"the default", 0, "10ms"},
		{"a longer settle", 300 * time.Millisecond, "300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := testkit.StartKafka(t)
			n := startNode(t, k.Addr(), func(c *frontend.Config) {
				if tc.settle > 0 {
					c.Subscriptions.Settle = tc.settle
				}
			})
			n.waitReady()
			if tc.settle == 0 {
				require.Equal(t, subscriptions.DefaultSettle, n.cfg.Subscriptions.Settle)
			}
			changes := testkit.NewReader(t, k.Addr(), n.cfg.Subscriptions.Topic)

			sub := testkit.DialRaw(t, n.addr, 5)
			sub.Connect("settle-sub", true)
			sent := time.Now()
			sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "settle/#", Qos: 1}}})
			ack := recvType(t, sub, packets.Suback)
			took := time.Since(sent)
			require.Equal(t, []byte{1}, ack.ReasonCodes)
			assert.GreaterOrEqual(t, took, n.cfg.Subscriptions.Settle, "the SUBACK waited the settle")

			recs := changes.Read(1, 10*time.Second)
			var got string
			for _, h := range recs[0].Headers {
				if h.Key == subscriptions.SettleHeader {
					got = string(h.Value)
				}
			}
			assert.Equal(t, tc.want, got, "the change announces the wait")
		})
	}
}
