package stats

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func TestBucketsRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 123456789, 1<<62 + 12345, 1<<63 - 1} {
		b := bucketOf(v)
		lo := lowerBound(b)
		if lo > v {
			t.Errorf("value %d: bucket %d starts at %d, above it", v, b, lo)
		}
		if next := lowerBound(b + 1); b+1 < nBuckets && next > 0 && next <= v {
			t.Errorf("value %d: next bucket %d starts at %d, not above it", v, b+1, lowerBound(b+1))
		}
		if v >= subCount && lowerBound(b+1) > 0 && float64(lowerBound(b+1)-lo)/float64(lo) > 1.0/subCount+1e-9 {
			t.Errorf("value %d: bucket width %d too wide", v, lowerBound(b+1)-lo)
		}
	}
}

func TestQuantilesMatchExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := map[string]func() int64{
		"uniform":   func() int64 { return rng.Int64N(10_000_000) },
		"lognormal": func() int64 { return int64(1e6 * (1 + rng.ExpFloat64()*rng.ExpFloat64())) },
		"small":     func() int64 { return rng.Int64N(100) },
	}
	for name, gen := range cases {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			xs := make([]int64, 100_000)
			for i := range xs {
				xs[i] = gen()
				h.Record(xs[i])
			}
			slices.Sort(xs)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
				exact := xs[int(q*float64(len(xs))+0.9999999)-1]
				got := h.Quantile(q)
				tol := float64(exact)/subCount + 1
				if d := float64(got - exact); d > tol || d < -tol {
					t.Errorf("q=%v: got %d, exact %d (tolerance %.0f)", q, got, exact, tol)
				}
			}
			if h.Quantile(1) != xs[len(xs)-1] || h.Quantile(0) != xs[0] {
				t.Errorf("min/max: got %d/%d, want %d/%d", h.Quantile(0), h.Quantile(1), xs[0], xs[len(xs)-1])
			}
		})
	}
}

func TestSummaryTable(t *testing.T) {
	tests := []struct {
		name          string
		samples       []int64
		p50, p99, max int64
		count         uint64
	}{
		{"empty", nil, 0, 0, 0, 0},
		{"one", []int64{42}, 42, 42, 42, 1},
		{"negative clamps to zero", []int64{-5, 10}, 0, 10, 10, 2},
		{"hundred", seq(1, 100), 50, 99, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.samples {
				h.Record(v)
			}
			s := h.Summarize()
			if s.Count != tt.count || int64(s.P50) != tt.p50 || int64(s.P99) != tt.p99 || int64(s.Max) != tt.max {
				t.Errorf("got count %d p50 %d p99 %d max %d, want %d %d %d %d",
					s.Count, s.P50, s.P99, s.Max, tt.count, tt.p50, tt.p99, tt.max)
			}
		})
	}
}

func seq(a, b int64) []int64 {
	var out []int64
	for v := a; v <= b; v++ {
		out = append(out, v)
	}
	return out
}

func TestConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10_000 {
				h.Record(int64(g*10_000 + i))
			}
		}()
	}
	wg.Wait()
	if h.Count() != 80_000 || h.Quantile(1) != 79_999 || h.Quantile(0) != 0 {
		t.Fatalf("count %d max %d min %d", h.Count(), h.Quantile(1), h.Quantile(0))
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		v := int64(1)
		for pb.Next() {
			h.Record(v)
			v = v*31 + 7&(1<<30-1)
		}
	})
}

// TestCountsPool: histograms pooled through Counts (as runs read back from
// their reports are) give the quantiles of one histogram that recorded all
// their samples; a bucket index from another layout is refused.
func TestCountsPool(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a, b, all Histogram
	for i := 0; i < 50_000; i++ {
		v := int64(1e6 * (1 + rng.ExpFloat64()))
		a.Record(v)
		all.Record(v)
	}
	for i := 0; i < 2_000; i++ { // a stall in the second run only
		v := 100e6 + rng.Int64N(50e6)
		b.Record(v)
		all.Record(v)
	}
	var pooled Histogram
	for _, h := range []*Histogram{&a, &b} {
		if err := pooled.Add(h.Counts()); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := pooled.Summarize(), all.Summarize(); got != want {
		t.Fatalf("pooled %+v, want %+v", got, want)
	}
	if pooled.Count() != a.Count()+b.Count() || pooled.Summarize().P99 == a.Summarize().P99 {
		t.Fatalf("pooled %d samples, p99 %v: the second run's stall not counted", pooled.Count(), pooled.Summarize().P99)
	}
	var empty Histogram
	if empty.Counts() != nil {
		t.Fatal("an empty histogram has counts")
	}
	if err := pooled.Add(&Counts{SubBits: subBits, Buckets: [][2]uint64{{nBuckets, 1}}}); err == nil {
		t.Fatal("a bucket out of range was added")
	}
	if err := pooled.Add(&Counts{SubBits: subBits - 1, Buckets: [][2]uint64{{1, 1}}}); err == nil {
		t.Fatal("counts of another layout were added")
	}
	// Through JSON, as a report keeps them.
	js, err := json.Marshal(a.Counts())
	if err != nil {
		t.Fatal(err)
	}
	var back Counts
	var again Histogram
	if err := json.Unmarshal(js, &back); err != nil || again.Add(&back) != nil || again.Summarize() != a.Summarize() {
		t.Fatalf("counts through JSON: %v; %+v, want %+v", err, again.Summarize(), a.Summarize())
	}
	if pooled.Count() != all.Count() {
		t.Fatalf("a refused Add changed the count: %d", pooled.Count())
	}
}
