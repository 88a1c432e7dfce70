package telemetry

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"
)

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// RegisterFlags registers log.level and log.format.
func (c *LogConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Level, "log.level", "info", "Log level: debug, info, warn or error.")
	fs.StringVar(&c.Format, "log.format", "text", "Log format: text or json.")
}

// Validate names the bad field.
func (c *LogConfig) Validate() error {
	var errs []error
	if _, err := parseLevel(c.Level); err != nil {
		errs = append(errs, fmt.Errorf("log.level: %w", err))
	}
	if c.Format != "text" && c.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q is not text or json", c.Format))
	}
	return errors.Join(errs...)
}

// NewLogger returns the slog logger described by c, writing to w.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	lvl, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// Metrics holds a MeterProvider whose instruments are served at /metrics
// through a Prometheus registry of its own.
type Metrics struct {
	Provider *metric.MeterProvider
	Registry *prometheus.Registry
	// Hot holds the histograms recorded per message or per request,
	// exported at /metrics beside the provider's instruments.
	Hot *HotHistograms
}

// NewMetrics builds the provider with a Prometheus exporter, plus the Go
// runtime and process collectors.
func NewMetrics() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hot := NewHotHistograms()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithProducer(hot),
		// Instrument names already carry their unit (fleetgate_*_seconds).
		otelprom.WithoutUnits(),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("creating prometheus exporter: %w", err)
	}
	return &Metrics{Provider: metric.NewMeterProvider(metric.WithReader(exp)), Registry: reg, Hot: hot}, nil
}
