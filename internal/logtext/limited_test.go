package logtext

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A flood of one message is written a few times a second; what is left out
// is counted in one warning, the other messages pass on their own.
func TestLimited(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := Limited(zap.New(core), 5, 10*time.Second)
	for range 1000 {
		l.Info("callback rejected: no login state")
	}
	l.Info("bearer token refused")
	if n := logs.FilterMessage("callback rejected: no login state").Len(); n != 5 {
		t.Errorf("%d lines of the flooded message in one second, want 5", n)
	}
	if n := logs.FilterMessage("bearer token refused").Len(); n != 1 {
		t.Errorf("another message: %d lines, want 1", n)
	}
	sum := logs.FilterMessageSnippet("log lines suppressed").All()
	if len(sum) != 1 || sum[0].ContextMap()["suppressed"] != int64(995) {
		t.Fatalf("summary: %+v, want one line counting 995", sum)
	}
}
