package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracingConfig configures OpenTelemetry tracing.
type TracingConfig struct {
	OTLPEndpoint string  `yaml:"otlp_endpoint"`
	Insecure     bool    `yaml:"insecure"`
	SampleRatio  float64 `yaml:"sample_ratio"`
}

// RegisterFlags registers the "tracing." flags.
func (c *TracingConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.OTLPEndpoint, "tracing.otlp-endpoint", "", "OTLP/HTTP endpoint (host:port) to send traces to; empty disables tracing. With tracing on, every Kafka record carries a W3C traceparent header.")
	fs.BoolVar(&c.Insecure, "tracing.insecure", false, "Send traces over plain HTTP instead of HTTPS.")
	fs.Float64Var(&c.SampleRatio, "tracing.sample-ratio", 0.01, "Fraction of publishes traced when the publisher sends no sampled traceparent (0..1).")
}

// Validate names the bad field.
func (c *TracingConfig) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("tracing.sample-ratio: %g must be between 0 and 1", c.SampleRatio)
	}
	return nil
}

// NewTracerProvider returns the provider described by c, and a function that
// flushes and stops it. Without an endpoint it is a no-op provider.
func NewTracerProvider(ctx context.Context, c TracingConfig, service string) (trace.TracerProvider, func(context.Context) error, error) {
	if c.OTLPEndpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(c.OTLPEndpoint)}
	if c.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing.otlp-endpoint: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, nil, errors.Join(err, exp.Shutdown(ctx))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		// Follow the publisher's sampling decision when it sent a
		// traceparent; sample a fraction of the rest.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	)
	return tp, tp.Shutdown, nil
}
