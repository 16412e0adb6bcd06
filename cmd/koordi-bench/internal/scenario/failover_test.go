package scenario

import (
	"math"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0.5, 3}, {0.99, 5}, {1, 5}, {0, 1}, {0.2, 1}, {0.21, 2}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if v[0] != 5 {
		t.Error("quantile sorted its argument in place")
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
}

func TestClusterSize(t *testing.T) {
	for kind, want := range map[string]int{"cluster": 3, "cluster6": 6, "cluster1": 1, "clusterx": 0, "cluster0": 0, "koordi": 0} {
		n, ok := clusterSize(kind)
		if n != want || ok != (want > 0) {
			t.Errorf("clusterSize(%q) = %d, %v; want %d", kind, n, ok, want)
		}
	}
}

func TestBecameLeader(t *testing.T) {
	log := `{"time":"2026-12-01T15:19:18.100+00:00","level":"INFO","msg":"became leader","slot":"s"}
not json "became leader"
{"time":"2026-12-01T15:19:20.250+00:00","level":"INFO","msg":"became leader","slot":"s"}
{"time":"2026-12-01T15:19:21.000+00:00","level":"INFO","msg":"something else \"became leader\""}`
	after := time.Date(2026, 12, 1, 15, 19, 19, 0, time.UTC)
	at, ok := becameLeader(log, after)
	if !ok || !at.Equal(time.Date(2026, 12, 1, 15, 19, 20, 250e6, time.UTC)) {
		t.Fatalf("becameLeader = %v, %v; want 15:19:20.250", at, ok)
	}
	if _, ok := becameLeader(log, at); ok {
		t.Error("a record at or before `after` counted")
	}
}

func TestParseStamp(t *testing.T) {
	if ns, ok := parseStamp([]byte(`{"event_id":"x","event_title":"bench:1234","changed":["title"]}`)); !ok || ns != 1234 {
		t.Errorf("parseStamp = %d, %v", ns, ok)
	}
	for _, bad := range []string{`{"event_title":"seed"}`, `{"event_title":"bench:"}`, `{"event_title":"bench:x1"}`, `{}`} {
		if _, ok := parseStamp([]byte(bad)); ok {
			t.Errorf("parseStamp(%s) accepted", bad)
		}
	}
}

// A socket counts for a window only if it was connected before the window
// began and for half a second after it ended; every commit of the window
// is then expected once.
func TestAccountFailover(t *testing.T) {
	s := int64(time.Second)
	kills := []time.Time{time.Unix(10, 0), time.Unix(20, 0)} // windows [9,19) and [19,30)
	stop := time.Unix(30, 0)
	commits := []commitRec{{1, 9 * s}, {2, 15 * s}, {3, 19 * s}, {4, 29 * s}, {5, 31 * s}}
	mk := func(connected, ended int64, stamps ...int64) *failoverFleet {
		ff := &failoverFleet{connectedAt: connected, f: &fleet{ended: make([]atomic.Int64, 1)}, recs: [][]receipt{nil}}
		ff.f.ended[0].Store(ended)
		for _, st := range stamps {
			ff.recs[0] = append(ff.recs[0], receipt{st, 0})
		}
		return ff
	}
	fleets := []*failoverFleet{
		mk(1*s, 0, 1, 2, 3, 4, 5),     // both windows, all once
		mk(1*s, 0, 1, 2, 2, 3),        // both windows: 2 twice, 4 lost
		mk(1*s, 19*s, 1, 2),           // died in window 1: counts for none
		mk(12*s, 0, 3, 4),             // connected after window 1 began: window 2 only
		mk(1*s, 19*s+int64(600e6), 1), // died 0.6 s after window 1: window 1 only, 2 lost
	}
	a := accountFailover(commits, kills, stop, fleets)
	want := FailoverAccounting{Commits: 4, Expected: 2*3 + 2*3, Delivered: 2 + 2 + 1 + 2 + 2 + 1, Lost: 1 + 1, Duplicates: 1, SocketRounds: 6}
	if a != want {
		t.Errorf("accountFailover = %+v\nwant %+v", a, want)
	}
}
