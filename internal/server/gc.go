package server

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// gcHeapFloor is the heap size below which the garbage collector does not
// start a cycle. The service keeps a few MiB live (more with full caches)
// and every check allocates about 2 KiB, nearly all of it net/http's
// request; with the runtime's default (GOGC=100: a cycle whenever the heap
// doubles) that is a cycle every 1,500 checks or so, and the cycles cost
// more than anything the check itself does (docs/performance.md). Letting
// the heap grow to this floor before collecting makes cycles rarer for the
// price of this much memory; once the live heap is more than half of it,
// the runtime's default applies unchanged. GOMEMLIMIT, which the Deployment
// sets from the container's memory limit, still bounds the heap.
const gcHeapFloor = 16 << 20

// gcTuner keeps the heap goal at least gcHeapFloor: after every cycle it
// sets GOGC so that the next goal is max(2 × live heap, floor).
type gcTuner struct {
	floor   uint64
	mu      sync.Mutex       // orders adjust and stop: no GOGC set after stop
	sample  []metrics.Sample // the live heap and GOGC now; guarded by mu
	stopped bool             // guarded by mu
}

// tuneGC starts the tuner, unless the operator chose GOGC: then the
// runtime does as told. Stop it with stop.
func tuneGC(floor uint64) *gcTuner {
	if _, set := os.LookupEnv("GOGC"); set {
		return nil
	}
	t := &gcTuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/gogc:percent"}}}
	t.adjust()
	return t
}

// sentinel is garbage from birth: the cleanup attached to it runs once per
// GC cycle. It holds a pointer so that it is never a tiny allocation, which
// the runtime may keep alive with its neighbours.
type sentinel struct{ _ *byte }

// adjust sets GOGC from the live heap of the cycle that just ended, and
// waits for the next.
func (t *gcTuner) adjust() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	percent := 100
	if live := t.sample[0].Value.Uint64(); live > 0 && 2*live < t.floor {
		percent = int((t.floor - live) * 100 / live)
	}
	// Only changes that matter: SetGCPercent recomputes the pacer's goal.
	if now := int(t.sample[1].Value.Uint64()); percent-now > now/8 || now-percent > now/8 {
		debug.SetGCPercent(percent)
	}
	runtime.AddCleanup(new(sentinel), func(t *gcTuner) { t.adjust() }, t)
}

// stop ends the tuning and gives the runtime its default back.
func (t *gcTuner) stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	debug.SetGCPercent(100)
}
