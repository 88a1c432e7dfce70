package telemetry

import (
	"context"
	"log/slog"
	"slices"
)

// FilterHandler wraps a slog.Handler: it drops records below Min and removes
// attributes whose keys are in Drop (used to keep payloads that third-party
// libraries attach, such as mochi's "pk", out of the logs).
type FilterHandler struct {
	Next slog.Handler
	Min  slog.Level
	Drop []string
}

// Filtered returns log with a FilterHandler.
func Filtered(log *slog.Logger, min slog.Level, drop ...string) *slog.Logger {
	return slog.New(&FilterHandler{Next: log.Handler(), Min: min, Drop: drop})
}

// Enabled implements slog.Handler.
func (h *FilterHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.Min && h.Next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *FilterHandler) Handle(ctx context.Context, r slog.Record) error {
	if len(h.Drop) == 0 {
		return h.Next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !slices.Contains(h.Drop, a.Key) {
			out.AddAttrs(a)
		}
		return true
	})
	return h.Next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler. Attributes attached with Logger.With
// are filtered too, or a dropped key would still reach Next that way.
func (h *FilterHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := slices.DeleteFunc(slices.Clone(as), func(a slog.Attr) bool { return slices.Contains(h.Drop, a.Key) })
	return &FilterHandler{Next: h.Next.WithAttrs(kept), Min: h.Min, Drop: h.Drop}
}

// WithGroup implements slog.Handler.
func (h *FilterHandler) WithGroup(name string) slog.Handler {
	return &FilterHandler{Next: h.Next.WithGroup(name), Min: h.Min, Drop: h.Drop}
}
