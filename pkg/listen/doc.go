// Package listen owns fleetgate's MQTT listeners: TCP (optionally TLS) and
// WebSocket (optionally wss), both implementing mochi's listeners.Listener
// and both able to take the PROXY protocol (v1 and v2) from trusted load
// balancers, so that mochi's cl.Net.Remote, the logs, throttling and session
// events see the device's address rather than the load balancer's. The
// WebSocket listener also holds the browser Origin policy. docs/listeners.md
// explains the choices.
//
// PROXY protocol: a connection from a trusted source (ProxyProtocol.Trusted)
// must open with a header, read within ProxyProtocol.HeaderTimeout; without
// one it is closed. A header from any other source is refused; such a source
// may connect without a header and keeps its own address. TLS sits inside the
// PROXY layer, as HAProxy in TCP mode sends it: header, then the TLS bytes.
//
// # Wiring it into the frontend
//
// Embed Config in the frontend's MQTT configuration; its fields and flags
// are under "mqtt":
//
//	type MQTTConfig struct {
//		...
//		Listen listen.Config `yaml:",inline"`
//	}
//
//	// in MQTTConfig.RegisterFlags and Config.Validate:
//	c.Listen.RegisterFlags(fs)
//	errs = append(errs, m.Listen.Validate())
//	if m.Listen.WSTLS && !m.TLSEnabled() {
//		errs = append(errs, errors.New("mqtt.ws-tls: needs mqtt.tls-cert-file and mqtt.tls-key-file"))
//	}
//
// and build the listeners with it in startListeners, in place of mochi's
// (no address probe is needed: Init binds, so a port in use fails Init):
//
//	pp, err := s.cfg.MQTT.Listen.Proxy() // nil when mqtt.proxy-protocol is off
//	proxy := listen.WithProxyProtocol(pp)
//	listen.NewTCP(ListenerTCP, m.TCPAddr, proxy)
//	listen.NewTCP(ListenerTLS, m.TLSAddr, listen.WithTLS(tc), proxy)
//	var wsTLS *tls.Config // nil: plain ws
//	if m.Listen.WSTLS {
//		wsTLS = tc
//	}
//	listen.NewWebSocket(ListenerWS, m.WSAddr, listen.WithTLS(wsTLS), proxy,
//		listen.WithAllowedOrigins(m.Listen.WSAllowedOrigins...))
//
// To count refusals (a metric with a bounded reason label), add
// listen.WithRefusalHook(func(reason string) { ... }) to each listener.
//
// To pace a reconnect storm, give every listener the same token bucket with
// listen.WithAcceptRate(rate.NewLimiter(perSecond, burst), waited): a
// listener out of tokens stops calling Accept until one is there, so the
// connections beyond the rate wait in the kernel's listen backlog and cost
// the node nothing (no goroutine, TLS handshake or CONNECT read).
//
// Init, Serve and Close are called as for mochi's listeners. Serve hands each
// connection to the establish function on a goroutine of its own; a refused
// one never reaches it. Constructors do no I/O.
//
// Of fleetgate it imports pkg/config. test/imports holds the import rules.
package listen
