package load

import (
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// MergePub aggregates rounds of the publish workload against one target:
// counts and CPU summed, histograms merged, rates over the summed measured
// time, the RSS of the last round.
func MergePub(rounds []*PubResult) *PubResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &PubResult{Target: rounds[0].Target, Config: rounds[0].Config}
	var server, bench measure.ProcessUsage
	serverOK := true
	for _, r := range rounds {
		m.Measured += r.Measured
		m.Sent += r.Sent
		m.Acked += r.Acked
		m.NegativeAcks += r.NegativeAcks
		m.Disconnects += r.Disconnects
		m.ConnectErrors += r.ConnectErrors
		m.Unacked += r.Unacked
		m.UnknownAcks += r.UnknownAcks
		m.TotalAcked += r.TotalAcked
		if r.hist != nil {
			if m.hist == nil {
				m.hist = measure.NewHistogram()
			}
			m.hist.Merge(r.hist)
		}
		bench.CPU += r.Bench.CPU
		if r.Server == nil {
			serverOK = false
		} else {
			server.CPU += r.Server.CPU
			server.RSS = r.Server.RSS
		}
	}
	if m.hist != nil {
		m.Latency = m.hist.Summary()
	}
	if m.Measured > 0 {
		m.SentPerSec = float64(m.Sent) / m.Measured.Seconds()
		m.AckedPerSec = float64(m.Acked) / m.Measured.Seconds()
	}
	msgs := m.Acked
	if m.Config.QoS == 0 {
		msgs = m.Sent
	}
	m.Bench = measure.Usage(bench.CPU, m.Measured, msgs)
	if serverOK {
		u := measure.Usage(server.CPU, m.Measured, msgs)
		u.RSS = server.RSS
		m.Server = &u
	}
	return m
}

// MergePubSub aggregates rounds of a pub/sub workload against one target
// like MergePub.
func MergePubSub(rounds []*PubSubResult) *PubSubResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &PubSubResult{Target: rounds[0].Target, Config: rounds[0].Config, hist: measure.NewHistogram()}
	var pubs []*PubResult
	var server, bench time.Duration
	serverOK := true
	for _, r := range rounds {
		pubs = append(pubs, r.Publish)
		m.ReadyAfter = max(m.ReadyAfter, r.ReadyAfter)
		m.NotReady += r.NotReady
		m.Measured += r.Measured
		m.Delivered += r.Delivered
		m.Expected += r.Expected
		m.Received += r.Received
		m.Lost += r.Lost
		m.Duplicates += r.Duplicates
		m.OutOfOrder += r.OutOfOrder
		m.Foreign += r.Foreign
		m.SubConnectErrors += r.SubConnectErrors
		m.SubscribeFailures += r.SubscribeFailures
		m.SubDisconnects += r.SubDisconnects
		m.SessionsNotCleared += r.SessionsNotCleared
		if r.hist != nil {
			m.hist.Merge(r.hist)
		}
		bench += r.Bench.CPU
		if r.Server == nil {
			serverOK = false
		} else {
			server += r.Server.CPU
		}
	}
	m.Publish = MergePub(pubs)
	m.Latency = m.hist.Summary()
	if m.Measured > 0 {
		m.DeliveredPerSec = float64(m.Delivered) / m.Measured.Seconds()
	}
	m.Bench = measure.Usage(bench, m.Measured, m.Delivered)
	if serverOK {
		u := measure.Usage(server, m.Measured, m.Delivered)
		u.RSS = rounds[len(rounds)-1].Server.RSS
		m.Server = &u
	}
	return m
}

// MergeIdle averages rounds of the idle workload against one target.
func MergeIdle(rounds []*IdleResult) *IdleResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &IdleResult{Target: rounds[0].Target, Config: rounds[0].Config}
	n := int64(len(rounds))
	var bpc, early, peak float64
	for _, r := range rounds {
		early += r.EarlyBytesPerConn
		peak += r.PeakBytesPerConn
		m.EarlyRSS += r.EarlyRSS
		m.Connected += r.Connected
		m.ConnectErrors += r.ConnectErrors
		m.Alive += r.Alive
		m.ConnectTime += r.ConnectTime
		m.BaselineRSS += r.BaselineRSS
		m.RSS += r.RSS
		m.PeakRSS = max(m.PeakRSS, r.PeakRSS)
		bpc += r.BytesPerConn
		m.IdleCPUPercent += r.IdleCPUPercent
		m.WSPings += r.WSPings
		m.WSPingErrors += r.WSPingErrors
		m.WSPongs += r.WSPongs
	}
	// Connections are per round on average; errors (and pings) are the
	// total.
	m.Connected /= int(n)
	m.Alive /= int(n)
	m.ConnectTime /= time.Duration(n)
	m.BaselineRSS /= n
	m.RSS /= n
	m.EarlyRSS /= n
	m.BytesPerConn = bpc / float64(n)
	m.EarlyBytesPerConn = early / float64(n)
	m.PeakBytesPerConn = peak / float64(n)
	m.IdleCPUPercent /= float64(n)
	return m
}
