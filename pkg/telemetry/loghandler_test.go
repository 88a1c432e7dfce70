package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
)

// newFiltered returns a logger through a FilterHandler over a text handler
// that itself lets everything through, and the buffer it writes to.
func newFiltered(min slog.Level, drop ...string) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	next := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	return Filtered(next, min, drop...), &buf
}

func TestFilterHandlerLevels(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     slog.Level
		log     func(*slog.Logger)
		wantOut bool
	}{
		{"a record below Min is dropped", slog.LevelWarn, func(l *slog.Logger) { l.Info("msg") }, false},
		{"a debug record below an info Min is dropped", slog.LevelInfo, func(l *slog.Logger) { l.Debug("msg") }, false},
		{"a record at Min is kept", slog.LevelWarn, func(l *slog.Logger) { l.Warn("msg") }, true},
		{"a record above Min is kept", slog.LevelWarn, func(l *slog.Logger) { l.Error("msg") }, true},
		{"a record below Min is dropped through With", slog.LevelWarn, func(l *slog.Logger) { l.With("a", 1).Info("msg") }, false},
		{"a record below Min is dropped through WithGroup", slog.LevelWarn, func(l *slog.Logger) { l.WithGroup("g").Info("msg") }, false},
		{"a record at Min is kept through With and WithGroup", slog.LevelWarn, func(l *slog.Logger) { l.With("a", 1).WithGroup("g").Warn("msg") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, buf := newFiltered(tc.min)
			tc.log(log)
			if tc.wantOut {
				assert.Contains(t, buf.String(), "msg=msg")
			} else {
				assert.Empty(t, buf.String())
			}
		})
	}
}

func TestFilterHandlerRespectsNextLevel(t *testing.T) {
	var buf bytes.Buffer
	next := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	log := Filtered(next, slog.LevelDebug)
	assert.False(t, log.Enabled(context.Background(), slog.LevelWarn), "the wrapped handler's level still applies")
	log.Warn("msg")
	assert.Empty(t, buf.String())
}

func TestFilterHandlerDropsAttributes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		drop     []string
		log      func(*slog.Logger)
		want     []string
		wantNone []string
	}{
		{
			name:     "a dropped key is removed and other keys stay",
			drop:     []string{"pk"},
			log:      func(l *slog.Logger) { l.Info("packet", "client", "c1", "pk", "SECRET-PAYLOAD", "listener", "tcp") },
			want:     []string{"msg=packet", "client=c1", "listener=tcp"},
			wantNone: []string{"pk=", "SECRET-PAYLOAD"},
		},
		{
			name:     "every listed key is removed",
			drop:     []string{"pk", "packet", "will"},
			log:      func(l *slog.Logger) { l.Warn("x", "pk", "P1", "packet", "P2", "will", "P3", "keep", "yes") },
			want:     []string{"keep=yes"},
			wantNone: []string{"P1", "P2", "P3"},
		},
		{
			name: "a dropped key is removed when given as an Attr",
			drop: []string{"pk"},
			log: func(l *slog.Logger) {
				l.LogAttrs(context.Background(), slog.LevelInfo, "x", slog.String("pk", "SECRET"), slog.Int("n", 1))
			},
			want:     []string{"n=1"},
			wantNone: []string{"SECRET"},
		},
		{
			name:     "a dropped key is removed when attached with With",
			drop:     []string{"pk"},
			log:      func(l *slog.Logger) { l.With("pk", "SECRET", "client", "c1").Info("x") },
			want:     []string{"client=c1"},
			wantNone: []string{"SECRET"},
		},
		{
			name:     "a dropped key is removed inside a group",
			drop:     []string{"pk"},
			log:      func(l *slog.Logger) { l.WithGroup("mochi").Info("x", "pk", "SECRET", "client", "c1") },
			want:     []string{"mochi.client=c1"},
			wantNone: []string{"SECRET"},
		},
		{
			name:     "a dropped key is removed when attached with With after WithGroup",
			drop:     []string{"pk"},
			log:      func(l *slog.Logger) { l.WithGroup("mochi").With("pk", "SECRET").Info("x", "client", "c1") },
			want:     []string{"mochi.client=c1"},
			wantNone: []string{"SECRET"},
		},
		{
			name: "without drop keys every attribute stays",
			log:  func(l *slog.Logger) { l.Info("x", "pk", "P1") },
			want: []string{"pk=P1"},
		},
		{
			name: "a key that only contains a dropped key stays",
			drop: []string{"pk"},
			log:  func(l *slog.Logger) { l.Info("x", "pkt", "P1", "apk", "P2") },
			want: []string{"pkt=P1", "apk=P2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, buf := newFiltered(slog.LevelDebug, tc.drop...)
			tc.log(log)
			out := buf.String()
			assert.NotEmpty(t, out)
			for _, s := range tc.want {
				assert.Contains(t, out, s)
			}
			for _, s := range tc.wantNone {
				assert.NotContains(t, out, s)
			}
		})
	}
}
