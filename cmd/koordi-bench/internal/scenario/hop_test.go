package scenario

import (
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

// The cluster is judged by the mean of its rows against the mean of the
// single node's, whatever the order.
func TestHopRatios(t *testing.T) {
	row := func(server string, msgs float64, p99 time.Duration) DeliveryRow {
		return DeliveryRow{Server: server, MsgsPerSec: msgs, Latency: stats.Summary{P50: p99 / 2, P99: p99},
			ServerCores: 1, DeliverySeconds: 1, Accounting: accounting{Delivered: int64(msgs)}}
	}
	rep := &Report{Rows: []DeliveryRow{
		row("koordi", 100, 10*time.Millisecond), row("cluster3", 60, 30*time.Millisecond),
		row("cluster3", 80, 10*time.Millisecond), row("koordi", 100, 10*time.Millisecond),
	}, Knees: []Knee{{Server: "koordi"}}}
	HopRatios(rep, 0.7, 2)
	if len(rep.Knees) != 0 {
		t.Error("knees kept")
	}
	want := map[string]struct {
		v   float64
		met bool
	}{"delivered msgs/s, mean": {0.7, true}, "p99, mean": {2, true}, "p50, mean": {2, false}, "server CPU per delivery, mean": {(1.0/60 + 1.0/80) / 2 / 0.01, false}}
	if len(rep.Ratios) != len(want) {
		t.Fatalf("ratios %+v", rep.Ratios)
	}
	for _, r := range rep.Ratios {
		w, ok := want[r.Figure]
		if !ok || r.Subject != "cluster3" || r.Baseline != "koordi" || r.Value < w.v-1e-9 || r.Value > w.v+1e-9 || r.Met != w.met {
			t.Errorf("ratio %+v, want %+v", r, w)
		}
	}
}
