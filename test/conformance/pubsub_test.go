package conformance

import (
	"fmt"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestSubscribeGrantsRequestedQoS: the SUBACK has one return code per
// filter, the QoS granted, here the QoS requested [MQTT-3.8.4-5]
// [MQTT-3.9.3-1] (3.1.1) / [MQTT-3.8.4-6] [MQTT-3.9.3-1] (5.0).
func TestSubscribeGrantsRequestedQoS(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		for q := range byte(3) {
			f := id("granted")
			s := l.dial(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{f + "/a", q}, {f + "/+", q}}})
			require.Equal(t, []byte{q, q}, s.Granted(), "SUBACK codes for QoS %d", q)
		}
	})
}

// TestUnsubscribeStopsDelivery: after UNSUBACK the server no longer adds
// messages for the filter [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4]
// (3.1.1) / [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4] (5.0).
func TestUnsubscribeStopsDelivery(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f := id("unsub")
		s := l.dial(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{f + "/gone", 1}, {f + "/kept", 1}}, Unsubs: []string{f + "/gone"}})
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		p.Publish(f+"/gone", "no", 1, false)
		p.Publish(f+"/kept", "yes", 1, false)
		m := next(t, s)
		require.Equal(t, f+"/kept", m.Topic, "only the remaining subscription delivers")
		none(t, s)
	})
}

// TestWildcards: '+' matches one level, '#' the level above and every
// level below [MQTT-4.7.1-2] [MQTT-4.7.1-3]; filters starting with a
// wildcard do not match topics starting with '$' [MQTT-4.7.2-1].
func TestWildcards(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		r := id("w")
		topics := []string{
			r + "/sport/tennis/player1",
			r + "/sport/tennis/player1/ranking",
			r + "/sport/tennis",
			r + "/sport",
			r + "/finance",
			"$" + r + "/monitor/clients",
		}
		cases := []struct {
			name   string
			filter string
			want   []string
		}{
			{"plus matches exactly one level", r + "/sport/tennis/+", []string{topics[0]}},
			{"hash matches the parent level and all below", r + "/sport/#", topics[:4]},
			{"plus in the middle", r + "/+/tennis/player1", []string{topics[0]}},
			{"plus and hash together", r + "/+/tennis/#", topics[:3]},
			{"an exact filter matches only its topic", r + "/finance", []string{topics[4]}},
			// [MQTT-4.7.2-1]: '#' and '+' at the start never match '$' topics.
			{"hash alone does not match dollar topics", "#", topics[:5]},
			{"leading plus does not match dollar topics", "+/monitor/clients", nil},
			{"a filter starting with dollar matches dollar topics", "$" + r + "/#", topics[5:]},
		}
		subs := make([]client, len(cases))
		for i, cs := range cases {
			subs[i] = l.dial(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{cs.filter, 1}}})
		}
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		for _, tp := range topics {
			p.Publish(tp, "x", 1, false)
		}
		for i, cs := range cases {
			var got []string
			for range cs.want {
				got = append(got, next(t, subs[i]).Topic)
			}
			sort.Strings(got)
			want := append([]string(nil), cs.want...)
			sort.Strings(want)
			require.Equal(t, want, got, cs.name)
		}
		for i, cs := range cases {
			select {
			case m := <-subs[i].Messages():
				t.Errorf("%s: filter %q got unexpected %q", cs.name, cs.filter, m.Topic)
			default:
			}
		}
		// Anything late shows up within the quiet period on any of them.
		none(t, subs[len(subs)-2])
	})
}

// TestQoSDowngrade: messages are delivered with the minimum of the QoS
// published and the QoS granted [MQTT-3.8.4-6] (3.1.1) / [MQTT-3.8.4-8]
// (5.0), through the QoS 0, 1 and 2 flows in both directions
// [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1].
func TestQoSDowngrade(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f := id("qos")
		subs := make([]client, 3)
		for sq := range byte(3) {
			subs[sq] = l.dial(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{f, sq}}})
		}
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		for pq := range byte(3) {
			p.Publish(f, fmt.Sprint(pq), pq, false)
		}
		for sq := range byte(3) {
			got := map[string]byte{}
			var seen []msg
			for range 3 {
				m := nextOf(t, c, subs[sq], f, seen)
				seen = append(seen, m)
				got[m.Payload] = m.QoS
			}
			require.Equal(t, map[string]byte{"0": 0, "1": min(1, sq), "2": min(2, sq)}, got, "subscription QoS %d", sq)
		}
	})
}
