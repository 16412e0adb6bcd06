// Package idlemem gives the heap's free memory back to the operating system
// once the process has gone quiet.
//
// The Go runtime keeps the pages the heap may grow into before its next
// collection (GOGC's headroom, by default as much again as the live heap)
// and returns only what lies beyond that. For a server holding many idle
// connections that headroom is about half its RSS, and it is idle memory: at
// the allocation rate of heartbeats it would take minutes to fill. V8, the
// engine of the Node reference, does the same thing when a page goes quiet
// (its memory reducer). A [Releaser] watches the allocation rate; when for
// Config.Quiet the process allocated far less than the memory it could
// return (an eighth), it calls [debug.FreeOSMemory] once: one collection and
// the free pages handed back. Under traffic it does nothing, so it costs no
// latency where latency matters; after a release it waits for the heap to
// grow again by Config.MinRelease before it releases again, so a process
// that stays idle pays one collection, not one per quiet period (the
// runtime's own periodic collection, every two minutes, returns nothing new).
package idlemem

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Releaser.
type Config struct {
	// Quiet is how long allocation must stay low before free memory is
	// returned; 0 means 5s, a negative value turns releasing off.
	Quiet time.Duration
	// MinRelease is the least worth a collection: below it nothing is
	// returned; 0 means 8 MiB.
	MinRelease uint64
	// Logger receives one line per release; nil discards.
	Logger *slog.Logger
	// Registerer, if set, receives koordi_memory_idle_releases_total and
	// koordi_memory_idle_released_bytes_total.
	Registerer prometheus.Registerer
}

// Releaser returns free heap memory to the OS when the process is quiet.
type Releaser struct {
	cfg      Config
	log      *slog.Logger
	releases prometheus.Counter
	released prometheus.Counter
	// free returns the heap to the OS; debug.FreeOSMemory but in tests.
	free func()
}

// New returns a Releaser; Run starts it.
func New(cfg Config) *Releaser {
	if cfg.Quiet == 0 {
		cfg.Quiet = 5 * time.Second
	}
	if cfg.MinRelease == 0 {
		cfg.MinRelease = 8 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Releaser{
		cfg: cfg,
		log: log,
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_memory_idle_releases_total",
			Help: "Times the process went quiet and returned its free heap memory to the OS.",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_memory_idle_released_bytes_total",
			Help: "Heap memory returned to the OS when quiet (the fall of the heap's resident pages).",
		}),
		free: debug.FreeOSMemory,
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.releases, r.released)
	}
	return r
}

// The runtime/metrics samples a Releaser reads.
const (
	allocsMetric   = "/gc/heap/allocs:bytes"
	liveMetric     = "/gc/heap/live:bytes"
	objectsMetric  = "/memory/classes/heap/objects:bytes"
	unusedMetric   = "/memory/classes/heap/unused:bytes"
	freeMetric     = "/memory/classes/heap/free:bytes"
	releasedMetric = "/memory/classes/heap/released:bytes"
)

// heapState is one reading of the runtime's heap figures.
type heapState struct {
	allocs   uint64 // bytes allocated since the process started
	live     uint64 // live heap at the last collection
	resident uint64 // heap pages held: objects, garbage, fragmentation, free
}

// releasable is what a collection and scavenge could give back: what the
// heap holds beyond what was live at the last collection.
func (h heapState) releasable() uint64 {
	if h.resident <= h.live {
		return 0
	}
	return h.resident - h.live
}

func readHeap(samples []metrics.Sample) heapState {
	metrics.Read(samples)
	v := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	return heapState{allocs: v(0), live: v(1), resident: v(2) + v(3) + v(4)}
}

func heapSamples() []metrics.Sample {
	names := []string{allocsMetric, liveMetric, objectsMetric, unusedMetric, freeMetric}
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	return s
}

// Run watches the heap until ctx ends; it returns nil then.
func (r *Releaser) Run(ctx context.Context) error {
	if r.cfg.Quiet < 0 {
		return nil
	}
	tick := max(r.cfg.Quiet/5, 10*time.Millisecond)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	samples := heapSamples()
	// window holds the readings of the last Quiet, oldest first.
	window := []heapState{readHeap(samples)}
	need := max(1, int(r.cfg.Quiet/tick))
	// What the heap held right after the last release: another waits until
	// it has grown by MinRelease since (0 before the first).
	var residentAfterRelease uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		now := readHeap(samples)
		window = append(window, now)
		if len(window) > need+1 {
			window = window[1:]
		}
		grown := now.resident >= residentAfterRelease+r.cfg.MinRelease
		if !grown || len(window) <= need || !r.quiet(window[0], now) {
			continue
		}
		r.release(now)
		after := readHeap(samples)
		residentAfterRelease = after.resident
		window = append(window[:0], after)
	}
}

// quiet reports whether the process allocated so little between then and
// now, against what it could return, that returning it is worth a
// collection: at that rate the headroom would last eight times as long.
func (r *Releaser) quiet(then, now heapState) bool {
	free := now.releasable()
	if free < r.cfg.MinRelease {
		return false
	}
	return (now.allocs-then.allocs)*8 < free
}

func (r *Releaser) release(before heapState) {
	released := []metrics.Sample{{Name: releasedMetric}}
	metrics.Read(released)
	start := time.Now()
	r.free()
	was := released[0].Value.Uint64()
	metrics.Read(released)
	var gave uint64
	if now := released[0].Value.Uint64(); now > was {
		gave = now - was
	}
	r.releases.Inc()
	r.released.Add(float64(gave))
	r.log.Info("quiet: returned free heap memory to the OS",
		"released_bytes", gave, "live_heap_bytes", before.live, "took", time.Since(start).Round(time.Microsecond))
}
