package server

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// With a live heap far below the floor, the tuner raises GOGC so that the
// next heap goal is the floor; stopped, it gives the default back.
func TestGCTunerRaisesGOGCBelowTheFloor(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set in this environment: the tuner leaves it alone (see TestGCTunerLeavesGOGCToTheOperator)")
	}
	tn := tuneGC(1 << 30)
	if tn == nil {
		t.Fatal("no tuner without GOGC")
	}
	t.Cleanup(tn.stop)
	// It adjusts after each cycle, on the runtime's cleanup goroutine.
	raised := func(what string) {
		for deadline := time.Now().Add(10 * time.Second); gogc() <= 100; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC still %d after cycles with a live heap far below 1 GiB", what, gogc())
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	}
	raised("after the first cycles")
	// Put the default back behind its back: the next cycles raise it again.
	debug.SetGCPercent(100)
	raised("after a reset")
	tn.stop()
	if g := gogc(); g != 100 {
		t.Errorf("GOGC %d after stop, want the default 100", g)
	}
}

func TestGCTunerLeavesGOGCToTheOperator(t *testing.T) {
	t.Setenv("GOGC", "100")
	if tn := tuneGC(1 << 30); tn != nil {
		tn.stop()
		t.Fatal("the tuner runs although GOGC is set")
	}
}
