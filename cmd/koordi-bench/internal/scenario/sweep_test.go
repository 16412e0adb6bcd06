package scenario

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// step builds a sweep row: p99 in ms, delivered/offered, lost.
func stepRow(server string, rate int, p99ms float64, ratio float64, lost int64) SweepRow {
	p99 := time.Duration(p99ms * float64(time.Millisecond))
	return SweepRow{Server: server, Rate: rate, DeliveredRatio: ratio,
		Latency:    stats.Summary{Count: 1000, P50: p99 / 4, P99: p99, Max: p99 * 2},
		Accounting: accounting{Expected: 1000, Delivered: 1000 - lost, Lost: lost}}
}

// okStep is a step that delivered everything, with the given p99.
func okStep(server string, rate int, p99ms float64) SweepRow {
	return stepRow(server, rate, p99ms, 1, 0)
}

func TestKnee(t *testing.T) {
	const limit = 25 * time.Millisecond
	tests := []struct {
		name  string
		rows  []SweepRow
		rate  int
		also  []int
		stop  int
		words string
	}{
		{
			name: "rises through the goal",
			rows: []SweepRow{stepRow("k", 250, 3, 1, 0), stepRow("k", 500, 9, 1, 0), stepRow("k", 750, 240, 0.99, 0), stepRow("k", 1000, 400, 0.99, 0)},
			rate: 500, words: "500 commits/s",
		},
		{
			name: "exactly at the goal passes",
			rows: []SweepRow{stepRow("k", 250, 25, 1, 0), stepRow("k", 500, 25.1, 1, 0)},
			rate: 250,
		},
		{
			name: "every rate met",
			rows: []SweepRow{stepRow("k", 250, 1, 1, 0), stepRow("k", 3000, 20, 0.99, 0)},
			rate: 3000,
		},
		{
			name:  "missed at the lowest rate",
			rows:  []SweepRow{stepRow("k", 250, 30, 1, 0), stepRow("k", 500, 10, 1, 0)},
			rate:  0,
			also:  []int{500},
			words: "none",
		},
		{
			name: "a noisy miss, then met again",
			rows: []SweepRow{stepRow("k", 250, 2, 1, 0), stepRow("k", 500, 40, 1, 0), stepRow("k", 750, 20, 1, 0)},
			rate: 250, also: []int{750}, words: "also met at [750]",
		},
		{
			name: "fast but not keeping up",
			rows: []SweepRow{stepRow("k", 250, 2, 1, 0), stepRow("k", 500, 2, 0.9, 0)},
			rate: 250,
		},
		{
			name: "fast but lossy",
			rows: []SweepRow{stepRow("k", 250, 2, 1, 0), stepRow("k", 500, 2, 1, 3)},
			rate: 250,
		},
		{
			name: "no samples is no pass",
			rows: []SweepRow{{Server: "k", Rate: 250, DeliveredRatio: 1}},
			rate: 0,
		},
		{
			name: "out of order, other servers ignored",
			rows: []SweepRow{stepRow("k", 1000, 90, 1, 0), stepRow("x", 750, 1, 1, 0), stepRow("k", 250, 1, 1, 0), stepRow("k", 500, 1, 1, 0)},
			rate: 500,
		},
		{
			name: "stopped early",
			rows: []SweepRow{stepRow("k", 250, 1, 1, 0), func() SweepRow { r := stepRow("k", 500, 9000, 0.5, 0); r.Stopped = "x"; return r }()},
			rate: 250, stop: 500, words: "sweep stopped at 500",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := kneeOf("k", tt.rows, limit, 0.95)
			if k.Rate != tt.rate || !slices.Equal(k.Also, tt.also) || k.Stopped != tt.stop || k.P99 != limit {
				t.Fatalf("got %+v, want rate %d also %v stopped %d", k, tt.rate, tt.also, tt.stop)
			}
			if d := k.describe(); !strings.Contains(d, tt.words) {
				t.Fatalf("%q lacks %q", d, tt.words)
			}
		})
	}
}

func TestFellOver(t *testing.T) {
	cfg := SweepConfig{Clients: 100, RoomSize: 10, Rates: []int{1}}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	dropped := stepRow("k", 1, 1, 1, 0)
	dropped.Accounting.Dropped = 2
	tests := []struct {
		row  SweepRow
		want string
	}{
		{stepRow("k", 1, 300, 0.97, 0), ""},
		{stepRow("k", 1, 300, 0.94, 0), "delivered 94% of the offered rate"},
		{stepRow("k", 1, 6000, 1, 0), "p99 6s > 5s"},
		{stepRow("k", 1, 1, 1, 5), "lost 5 deliveries"},
		{dropped, "2 clients dropped"},
	}
	for _, tt := range tests {
		got := cfg.fellOver(tt.row)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("p99 %s ratio %.2f lost %d: got %q, want %q", tt.row.Latency.P99, tt.row.DeliveredRatio, tt.row.Accounting.Lost, got, tt.want)
		}
	}
}

func sampleSweep() ([]SweepRow, []Knee) {
	rows := []SweepRow{
		stepRow("raw", 250, 0.42, 1, 0), stepRow("raw", 1000, 0.9, 1, 0), stepRow("raw", 2000, 3.1, 0.99, 0), stepRow("raw", 3000, 48, 0.98, 0),
		stepRow("koordi", 250, 2.2, 1, 0), stepRow("koordi", 1000, 320, 0.99, 0), stepRow("koordi", 2000, 1180, 0.97, 0), stepRow("koordi", 3000, 7900, 0.7, 0),
		stepRow("node", 250, 21, 1, 0), stepRow("node", 1000, 19700, 0.43, 0),
	}
	rows[7].Stopped, rows[9].Stopped = "delivered 70%", "delivered 43%"
	var knees []Knee
	for _, s := range []string{"raw", "koordi", "node"} {
		knees = append(knees, kneeOf(s, rows, 25*time.Millisecond, 0.95))
	}
	return rows, knees
}

func TestSweepSVGGolden(t *testing.T) {
	rows, _ := sampleSweep()
	// koordi again, as a command naming it twice runs it.
	rows = append(rows, stepRow("koordi", 250, 1.9, 1, 0), stepRow("koordi", 1000, 14, 1, 0), stepRow("koordi", 2000, 240, 0.99, 0))
	knees, _ := sweepKnees(rows, SweepConfig{KneeP99: 25 * time.Millisecond, MinDelivered: 0.95})
	var buf bytes.Buffer
	if err := writeSweepSVG(&buf, "p99 <sample> & co", rows, knees, 25*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML.
	d := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	for {
		if _, err := d.Token(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("not XML: %v", err)
		}
	}
	for _, want := range []string{"raw (knee 2000/s)", "koordi#1 (knee 250/s)", "koordi#2 (knee 1000/s)", "stroke-dasharray=\"6 3\"", "node (knee 250/s)", "p99 goal 25 ms", "&lt;sample&gt; &amp; co", "10 s", "100 µs"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("plot lacks %q", want)
		}
	}
	golden := filepath.Join("testdata", "sweep.svg")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("plot differs from %s (run with -update after checking the new one)", golden)
	}
}

// TestSweepRunsKneesAndRatios: a server named twice in one command is two
// runs, each with its knee, its column in the curve and its ratio against
// the baseline's run of the same number.
func TestSweepRunsKneesAndRatios(t *testing.T) {
	rows := []SweepRow{
		okStep("raw", 250, 1), okStep("raw", 500, 2), okStep("raw", 750, 30),
		okStep("koordi", 250, 2), okStep("koordi", 500, 40), okStep("koordi", 750, 60),
		okStep("raw", 250, 1), okStep("raw", 500, 30), okStep("raw", 750, 40),
		okStep("koordi", 250, 3), okStep("koordi", 500, 9), okStep("koordi", 750, 80),
	}
	runs := sweepRuns(rows)
	if len(runs) != 4 || runs[2].server != "raw" || runs[2].n != 2 || runs[2].of != 2 || len(runs[3].rows) != 3 {
		t.Fatalf("runs %+v", runs)
	}
	var knees []string
	for _, r := range runs {
		k := kneeOf(r.server, r.rows, 25*time.Millisecond, 0.95)
		knees = append(knees, fmt.Sprintf("%s:%d", runName(r.server, r.n), k.Rate))
	}
	if got := strings.Join(knees, " "); got != "raw#1:500 koordi#1:250 raw#2:250 koordi#2:500" {
		t.Fatalf("knees %s", got)
	}
	_, ratios := sweepKnees(rows, SweepConfig{KneeP99: 25 * time.Millisecond, MinDelivered: 0.95})
	var got []string
	for _, q := range ratios {
		if q.Baseline != "absolute" {
			got = append(got, fmt.Sprintf("%s/%s=%.2f", q.Subject, q.Baseline, q.Value))
		}
	}
	if g := strings.Join(got, " "); g != "koordi#1/raw#1=0.50 koordi#2/raw#2=2.00" {
		t.Fatalf("ratios %s: want each run against the baseline's run of its number", g)
	}
	var buf bytes.Buffer
	printCurve(&buf, rows)
	for _, want := range []string{"raw#1", "koordi#2", "koordi#2/raw#1"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("curve lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestSweepReport(t *testing.T) {
	rows, knees := sampleSweep()
	rep := &Report{Scenario: "latency", Started: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Machine: Machine{CPUs: 2, LoadAvg: "1.00 1.00 1.00"},
		Config: SweepConfig{KneeP99: 25 * time.Millisecond}, Rows: rows, Knees: knees,
		Ratios: []Ratio{{Figure: "knee commits/s", Subject: "koordi", Baseline: "raw", Value: 0.125}}}
	var buf bytes.Buffer
	rep.Print(&buf)
	out := buf.String()
	for _, want := range []string{"== latency", "p99 by offered rate:", "koordi/raw", "knee raw       2000 commits/s", "knee node      250 commits/s",
		"sweep stopped at 1000", "koordi/raw = 0.125", "delivered 43%", "3.10 ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	path, err := rep.WritePlot(dir)
	if err != nil || path != filepath.Join(dir, "latency-20261201T100000Z.svg") {
		t.Fatalf("plot %s, %v", path, err)
	}
	if p, err := (&Report{Rows: []DeliveryRow{}}).WritePlot(dir); p != "" || err != nil {
		t.Fatalf("a fanout report plotted: %s %v", p, err)
	}
}

// TestReplot: a latency report read back from its JSON is drawn with its
// knees worked out again from the rows, whatever knees the JSON holds (a
// report from before knees were per run), as WritePlot draws it with the
// right ones; a report of another scenario, or without rows, is refused.
func TestReplot(t *testing.T) {
	rows, _ := sampleSweep()
	rows = append(rows, stepRow("koordi", 250, 1.9, 1, 0), stepRow("koordi", 1000, 14, 1, 0))
	cfg := SweepConfig{KneeP99: 25 * time.Millisecond, MinDelivered: 0.95}
	knees, _ := sweepKnees(rows, cfg)
	started := time.Date(2026, 12, 3, 9, 28, 0, 0, time.UTC)
	rep := &Report{Scenario: "latency", Started: started, Machine: Machine{CPUs: 2, LoadAvg: "0.82 0.92 0.43"},
		Config: cfg, Rows: rows, Knees: knees}
	dir := t.TempDir()
	written, err := rep.WritePlot(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(written)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(written); err != nil {
		t.Fatal(err)
	}
	// The JSON's knees are stale: one per server, merged over its runs.
	rep.Knees = []Knee{{Server: "koordi", Rate: 3000}, {Server: "raw", Rate: 3000}}
	jsonPath, err := rep.WriteJSON(dir)
	if err != nil {
		t.Fatal(err)
	}
	path, err := Replot(jsonPath)
	if err != nil || path != written {
		t.Fatalf("Replot: %s, %v; want %s", path, err, written)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the plot drawn from the JSON differs from the one with the rows' own knees")
	}

	hop := &Report{Scenario: "hop-latency", Started: started.Add(time.Minute), Config: cfg, Rows: rows}
	hopPath, err := hop.WriteJSON(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Replot(hopPath); err != nil {
		t.Fatalf("a hop-latency report: %v", err)
	}
	for _, c := range []struct {
		rep  *Report
		want string
	}{
		{&Report{Scenario: "fanout", Started: started.Add(2 * time.Minute), Rows: []DeliveryRow{{Server: "raw", Clients: 10}}}, "not a latency report"},
		{&Report{Scenario: "latency", Started: started.Add(3 * time.Minute), Rows: []SweepRow{}}, "without rows"},
	} {
		p, err := c.rep.WriteJSON(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Replot(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s report: %v, want %q", c.rep.Scenario, err, c.want)
		}
	}
}

// TestTimelineSlowWindows: deliveries are binned by write time; consecutive
// slots whose worst delivery was over the limit make one window, and writes
// outside the step are ignored.
func TestTimelineSlowWindows(t *testing.T) {
	start := time.Unix(100, 0)
	tl := newTimeline(start, time.Second)
	at := func(d time.Duration) int64 { return start.Add(d).UnixNano() }
	ms := func(n int) int64 { return int64(time.Duration(n) * time.Millisecond) }
	tl.record(at(10*time.Millisecond), ms(3))    // slot 0: fine
	tl.record(at(120*time.Millisecond), ms(40))  // slot 2: slow
	tl.record(at(130*time.Millisecond), ms(2))   // the same slot: its worst stays
	tl.record(at(160*time.Millisecond), ms(90))  // slot 3: slow, joins slot 2
	tl.record(at(420*time.Millisecond), ms(30))  // slot 8: slow alone
	tl.record(at(-time.Second), ms(500))         // before the step
	tl.record(at(-10*time.Millisecond), ms(500)) // just before it: not slot 0
	tl.record(at(5*time.Second), ms(500))        // after it
	got := tl.slow(25 * time.Millisecond)
	want := []SlowWindow{
		{At: 100 * time.Millisecond, Span: 100 * time.Millisecond, Worst: 90 * time.Millisecond},
		{At: 400 * time.Millisecond, Span: 50 * time.Millisecond, Worst: 30 * time.Millisecond},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("slow windows %+v, want %+v", got, want)
	}
	if got := tl.slow(time.Second); len(got) != 0 {
		t.Fatalf("over a limit nothing reached: %+v", got)
	}
}

// countedRow is a step whose histogram is kept: n deliveries at about ms,
// and stalled of them at stallMs instead.
func countedRow(server string, rate int, ms float64, n, stalled int, stallMs float64) SweepRow {
	var h stats.Histogram
	for i := 0; i < n; i++ {
		v := ms
		if i < stalled {
			v = stallMs
		}
		h.Record(int64(v * float64(time.Millisecond)))
	}
	return SweepRow{Server: server, Rate: rate, Offered: float64(rate), Delivered: float64(rate), DeliveredRatio: 1,
		Latency: h.Summarize(), LatencyCounts: h.Counts(), Accounting: accounting{Expected: int64(n), Delivered: int64(n)}}
}

// TestPooledKnees: a server's runs are pooled rate by rate, so one run's
// stall of 1.5% of its deliveries (its p99, ending that run's knee) is
// 0.75% of the pooled deliveries and does not end the pooled knee; the
// pooled knees get their ratio against the baseline's pooled knee, their
// column in the curve, and a pooled run that stopped stops there. A report
// without histograms (from before they were kept) gets no pooled knee.
func TestPooledKnees(t *testing.T) {
	const limit = 25 * time.Millisecond
	rows := []SweepRow{
		countedRow("raw", 250, 1, 1000, 0, 0), countedRow("raw", 500, 1, 1000, 0, 0), countedRow("raw", 750, 2, 1000, 0, 0),
		countedRow("koordi", 250, 2, 1000, 0, 0), countedRow("koordi", 500, 3, 1000, 15, 80), countedRow("koordi", 750, 4, 1000, 0, 0),
		countedRow("raw", 250, 1, 1000, 0, 0), countedRow("raw", 500, 1, 1000, 0, 0), countedRow("raw", 750, 2, 1000, 0, 0),
		countedRow("koordi", 250, 2, 1000, 0, 0), countedRow("koordi", 500, 3, 1000, 0, 0), countedRow("koordi", 750, 4, 1000, 0, 0),
	}
	knees, ratios := sweepKnees(rows, SweepConfig{KneeP99: limit, MinDelivered: 0.95})
	got := map[string]Knee{}
	for _, k := range knees {
		got[k.name()] = k
	}
	if got["koordi#1"].Rate != 250 || got["koordi#2"].Rate != 750 || got["koordi#all"].Rate != 750 || got["raw#all"].Rate != 750 || got["koordi#all"].Pooled != 2 {
		t.Fatalf("knees %+v", knees)
	}
	if !strings.Contains(got["koordi#all"].describe(), "2 runs' deliveries pooled") {
		t.Errorf("pooled knee described as %q", got["koordi#all"].describe())
	}
	var pooledRatio string
	for _, q := range ratios {
		if q.Subject == "koordi#all" && q.Baseline != "absolute" {
			pooledRatio = fmt.Sprintf("%s/%s=%.2f", q.Subject, q.Baseline, q.Value)
		}
	}
	if pooledRatio != "koordi#all/raw#all=1.00" {
		t.Errorf("pooled ratio %q", pooledRatio)
	}
	var buf bytes.Buffer
	printCurve(&buf, rows)
	if !strings.Contains(buf.String(), "koordi#all") {
		t.Errorf("curve lacks the pooled column:\n%s", buf.String())
	}
	var svg bytes.Buffer
	if err := writeSweepSVG(&svg, "t", rows, knees, limit); err != nil || !strings.Contains(svg.String(), "koordi (2 runs): 750/s") {
		t.Errorf("plot lacks the pooled knee (%v)", err)
	}

	stopped := slices.Clone(rows)
	stopped[10].Stopped = "p99 over 5s: sweep stopped"
	stopped = slices.Delete(stopped, 11, 12)
	for _, run := range pooledRuns(sweepRuns(stopped)) {
		if run.server == "koordi" && (len(run.rows) != 2 || run.rows[1].Stopped == "") {
			t.Errorf("pooled koordi went on past its second run's stop: %+v", run.rows)
		}
	}

	var decoded SweepRow // a row of a report from before histograms were kept
	if err := json.Unmarshal([]byte(`{"server":"koordi","rate":250,"latency":{"count":1000,"p99_ns":2000000}}`), &decoded); err != nil || decoded.LatencyCounts != nil {
		t.Fatalf("an old row decoded with counts: %v", err)
	}
	old := slices.Clone(rows)
	for i := range old {
		old[i].LatencyCounts = nil
	}
	knees, _ = sweepKnees(old, SweepConfig{KneeP99: limit, MinDelivered: 0.95})
	for _, k := range knees {
		if k.Pooled > 0 {
			t.Errorf("a report without histograms pooled: %+v", k)
		}
	}
}

// TestGatewayPGBaseline: koordi's knee gets a ratio against gateway-pg
// (the gateway with PostgreSQL's share of the machine beside it), what
// koordi's own reading of the stream costs.
func TestGatewayPGBaseline(t *testing.T) {
	rows := []SweepRow{
		okStep("gateway-pg", 500, 2), okStep("gateway-pg", 750, 9), okStep("gateway-pg", 1000, 40),
		okStep("koordi", 500, 3), okStep("koordi", 750, 30), okStep("koordi", 1000, 80),
	}
	_, ratios := sweepKnees(rows, SweepConfig{KneeP99: 25 * time.Millisecond, MinDelivered: 0.95})
	for _, q := range ratios {
		if q.Subject == "koordi" && q.Baseline == "gateway-pg" {
			if q.Value < 0.66 || q.Value > 0.67 {
				t.Fatalf("koordi/gateway-pg = %.3f, want 500/750", q.Value)
			}
			return
		}
	}
	t.Fatalf("no koordi/gateway-pg ratio in %+v", ratios)
}
