package idlemem

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// These tests share the process's heap; none runs in parallel.

var sink [][]byte

// makeGarbage allocates about n bytes with the collector off and drops
// them: the heap then holds n bytes of pages that were never live at a
// collection, which a release can return (part of them may be scavenged
// by the runtime before that).
func makeGarbage(n int) {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	for i := 0; i < n/(64<<10); i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	debug.SetGCPercent(old)
}

func runFor(t *testing.T, r *Releaser, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestReleasesWhenQuiet(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := New(Config{Quiet: 200 * time.Millisecond, Registerer: reg})
	makeGarbage(64 << 20)
	runFor(t, r, time.Second)
	if n := testutil.ToFloat64(r.releases); n != 1 {
		t.Fatalf("releases = %v, want 1 (one release, then none until the heap grows again)", n)
	}
	if got := testutil.ToFloat64(r.released); got < 8<<20 {
		t.Fatalf("released %.0f bytes of about 64 MiB of garbage, want at least 8 MiB", got)
	}
}

func TestNoReleaseUnderAllocation(t *testing.T) {
	r := New(Config{Quiet: 200 * time.Millisecond})
	var calls atomic.Int32
	r.free = func() { calls.Add(1) }
	makeGarbage(16 << 20)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// About 2 MiB a millisecond: the headroom of a 16 MiB heap is used
		// many times over in every quiet period.
		var keep []byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 32; i++ {
				keep = make([]byte, 64<<10)
			}
			_ = keep
			time.Sleep(time.Millisecond)
		}
	}()
	runFor(t, r, time.Second)
	close(stop)
	<-done
	if n := calls.Load(); n != 0 {
		t.Fatalf("released %d times while the process allocated steadily", n)
	}
}

func TestReleasesAgainAfterTheHeapGrew(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := New(Config{Quiet: 100 * time.Millisecond, Registerer: reg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for testutil.ToFloat64(r.releases) < n {
			if time.Now().After(deadline) {
				t.Fatalf("releases = %v, want %v", testutil.ToFloat64(r.releases), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	makeGarbage(64 << 20)
	waitFor(1)
	// Idle after the release: the heap has not grown, nothing to return.
	time.Sleep(600 * time.Millisecond)
	if n := testutil.ToFloat64(r.releases); n != 1 {
		t.Fatalf("released %v times while the heap stayed as the first release left it, want 1", n)
	}
	makeGarbage(64 << 20) // the heap grows again, then goes quiet
	waitFor(2)
}

// releasesCounted runs a Releaser of cfg for d after garbage bytes of
// garbage, with a release that returns nothing (the heap stays as
// releasable as before), and reports how often it released.
func releasesCounted(t *testing.T, cfg Config, garbage int, d time.Duration) int32 {
	t.Helper()
	r := New(cfg)
	var calls atomic.Int32
	r.free = func() { calls.Add(1) }
	makeGarbage(garbage)
	runFor(t, r, d)
	return calls.Load()
}

func TestOneReleaseWhileTheHeapDoesNotGrow(t *testing.T) {
	// Only the wait for the heap to grow stops a second release, also with
	// a quiet period shorter than the sampling tick.
	if n := releasesCounted(t, Config{Quiet: 5 * time.Millisecond}, 32<<20, 500*time.Millisecond); n != 1 {
		t.Fatalf("released %d times while the heap did not grow, want 1", n)
	}
}

func TestSmallHeapNotWorthACollection(t *testing.T) {
	if n := releasesCounted(t, Config{Quiet: 100 * time.Millisecond, MinRelease: 1 << 40}, 16<<20, 500*time.Millisecond); n != 0 {
		t.Fatalf("released %d times below MinRelease", n)
	}
}

func TestDisabled(t *testing.T) {
	r := New(Config{Quiet: -1})
	r.free = func() { t.Error("released while disabled") }
	makeGarbage(16 << 20)
	runFor(t, r, 300*time.Millisecond)
}
