package scenario

import (
	"sync/atomic"
	"time"
)

// timeline keeps the worst latency of the deliveries written in each slot
// of a step (by the write time each event carries), so that a step's p99
// can be told apart as one stall or a broad rise, and when in the step a
// stall began.
type timeline struct {
	start, width int64 // Unix ns, ns
	worst        []atomic.Int64
}

const timelineSlot = 50 * time.Millisecond

func newTimeline(start time.Time, span time.Duration) *timeline {
	n := int(span/timelineSlot) + 1
	return &timeline{start: start.UnixNano(), width: int64(timelineSlot), worst: make([]atomic.Int64, n)}
}

// record notes a delivery of what was written at stamp, latency ns late.
// Writes outside the step (before its start, or after its end when the
// writer fell behind) are not counted.
func (t *timeline) record(stamp, latency int64) {
	if stamp < t.start {
		return
	}
	i := (stamp - t.start) / t.width
	if i >= int64(len(t.worst)) {
		return
	}
	w := &t.worst[i]
	for {
		m := w.Load()
		if latency <= m || w.CompareAndSwap(m, latency) {
			return
		}
	}
}

// SlowWindow is a stretch of a step in which every slot of writes had a
// delivery later than the knee's p99 limit (its worst: one late client
// makes a slot slow, so a lone short window is noise, a long one a stall).
// The warmup is included: At is from the step's first write.
type SlowWindow struct {
	At    time.Duration `json:"at_ns"`
	Span  time.Duration `json:"span_ns"`  // whole slots of timelineSlot
	Worst time.Duration `json:"worst_ns"` // the latest delivery of its writes
}

// slow merges consecutive slots whose worst delivery exceeded limit.
func (t *timeline) slow(limit time.Duration) []SlowWindow {
	var out []SlowWindow
	for i := range t.worst {
		w := time.Duration(t.worst[i].Load())
		if w <= limit {
			continue
		}
		at := time.Duration(int64(i) * t.width)
		if n := len(out); n > 0 && out[n-1].At+out[n-1].Span == at {
			out[n-1].Span += timelineSlot
			out[n-1].Worst = max(out[n-1].Worst, w)
			continue
		}
		out = append(out, SlowWindow{At: at, Span: timelineSlot, Worst: w})
	}
	return out
}
