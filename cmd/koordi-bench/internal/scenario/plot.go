package scenario

import (
	"bufio"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// WritePlot writes a latency sweep's plot next to its JSON report
// (dir/<scenario>-<time>.svg) and returns the path, or "" for reports
// without a sweep.
func (r *Report) WritePlot(dir string) (string, error) {
	rows, ok := r.Rows.([]SweepRow)
	if !ok || len(rows) == 0 {
		return "", nil
	}
	cfg, _ := r.Config.(SweepConfig)
	cfg.kneeDefaults()
	return r.writePlot(filepath.Join(dir, r.basename()+".svg"), rows, cfg.KneeP99)
}

func (r *Report) writePlot(path string, rows []SweepRow, limit time.Duration) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := writeSweepSVG(f, r.plotTitle(), rows, r.Knees, limit); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

func (r *Report) plotTitle() string {
	return fmt.Sprintf("p99 write-to-receive vs offered rate (%s, %d CPUs, load %s)", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Machine.CPUs, r.Machine.LoadAvg)
}

// Plot geometry.
const (
	plotW, plotH                         = 900, 460
	padLeft, padRight, padTop, padBottom = 72, 270, 44, 56
)

var palette = map[string]string{"raw": "#555555", "gateway": "#ff7f0e", "gateway-pg": "#e377c2", "koordi": "#1f77b4", "inproc": "#17becf", "node": "#2ca02c", "url": "#9467bd"}

var spare = []string{"#ff7f0e", "#8c564b", "#e377c2", "#bcbd22"}

// writeSweepSVG draws p99 (log scale) against the offered rate, one line
// per run of a server in the order they ran (a server run again in the
// same command: koordi#2, dashed) with its knee of knees, and the
// goal as a dashed line; grid lines at 1, 2 and 5 of each decade. A step
// that ended its run's sweep is drawn hollow. The output depends only on
// its arguments (golden-tested).
func writeSweepSVG(out io.Writer, title string, rows []SweepRow, knees []Knee, limit time.Duration) error {
	w := bufio.NewWriter(out)
	var rates []int
	lo, hi := limit.Seconds()*1e3, limit.Seconds()*1e3 // ms
	for _, x := range rows {
		if !slices.Contains(rates, x.Rate) {
			rates = append(rates, x.Rate)
		}
		if x.Latency.Count > 0 && x.Latency.P99 > 0 {
			v := float64(x.Latency.P99) / 1e6
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	slices.Sort(rates)
	runs := sweepRuns(rows)
	// Whole decades around the data and the goal.
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	// The rate axis spans whole 500s around the rates swept, so a sweep
	// of a narrow range near the knee is not squeezed into its right end.
	xmin := 500 * math.Floor(float64(rates[0])/500)
	xmax := 500 * math.Ceil(float64(rates[len(rates)-1])/500)
	if xmax <= xmin {
		xmax = xmin + 500
	}
	x0, x1 := float64(padLeft), float64(plotW-padRight)
	y0, y1 := float64(plotH-padBottom), float64(padTop)
	px := func(rate float64) float64 { return x0 + (x1-x0)*(rate-xmin)/(xmax-xmin) }
	py := func(msv float64) float64 { return y0 - (y0-y1)*(math.Log10(msv)-dlo)/(dhi-dlo) }

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	fmt.Fprintf(w, `<text x="%d" y="20" font-size="14">%s</text>`+"\n", padLeft, html.EscapeString(title))
	// Axes, grid and ticks.
	fmt.Fprintf(w, `<g stroke="#eee" stroke-width="1">`+"\n")
	for d := dlo; d < dhi; d++ {
		for _, m := range []float64{2, 5} {
			fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0, py(m*math.Pow(10, d)), x1, py(m*math.Pow(10, d)))
		}
	}
	fmt.Fprintf(w, "</g>\n")
	fmt.Fprintf(w, `<g stroke="#ccc" stroke-width="1">`+"\n")
	for d := dlo; d <= dhi; d++ {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x0, py(math.Pow(10, d)), x1, py(math.Pow(10, d)))
	}
	for _, r := range rates {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", px(float64(r)), y0, px(float64(r)), y1)
	}
	fmt.Fprintf(w, "</g>\n")
	fmt.Fprintf(w, `<path d="M%.1f %.1fV%.1fH%.1f" fill="none" stroke="black"/>`+"\n", x0, y1, y0, x1)
	for d := dlo; d <= dhi; d++ {
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", x0-6, py(math.Pow(10, d)), decade(d))
	}
	for _, r := range rates {
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", px(float64(r)), y0+18, r)
	}
	fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">offered commits/s (each to one room)</text>`+"\n", (x0+x1)/2, plotH-12)
	fmt.Fprintf(w, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">p99 write-to-receive (log scale)</text>`+"\n", (y0+y1)/2)
	// The goal.
	gy := py(limit.Seconds() * 1e3)
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n", x0, gy, x1, gy)
	fmt.Fprintf(w, `<text x="%.1f" y="%.1f" fill="#d62728">p99 goal %g ms</text>`+"\n", x0+6, gy-5, limit.Seconds()*1e3)
	// One line per run.
	serverIndex := map[string]int{}
	for i, run := range runs {
		if _, ok := serverIndex[run.server]; !ok {
			serverIndex[run.server] = len(serverIndex)
		}
		color, ok := palette[run.server]
		if !ok {
			color = spare[serverIndex[run.server]%len(spare)]
		}
		dash := ""
		if run.n > 1 {
			dash = ` stroke-dasharray="6 3"`
		}
		var pts [][2]float64
		var hollow []bool
		for _, x := range run.rows {
			if x.Latency.Count == 0 || x.Latency.P99 <= 0 {
				continue
			}
			pts = append(pts, [2]float64{px(float64(x.Rate)), py(float64(x.Latency.P99) / 1e6)})
			hollow = append(hollow, x.Stopped != "")
		}
		if len(pts) > 1 {
			fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="`, color, dash)
			for j, p := range pts {
				if j > 0 {
					w.WriteByte(' ')
				}
				fmt.Fprintf(w, "%.1f,%.1f", p[0], p[1])
			}
			fmt.Fprintf(w, "\"/>\n")
		}
		for j, p := range pts {
			fill := color
			if hollow[j] {
				fill = "white"
			}
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n", p[0], p[1], fill, color)
		}
		label := run.name()
		for _, k := range knees {
			switch {
			case k.name() != label:
			case k.Rate > 0:
				label += fmt.Sprintf(" (knee %d/s)", k.Rate)
			default:
				label += " (no knee)"
			}
		}
		ly := float64(padTop + 10 + 22*i)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x1+14, ly, x1+38, ly, color, dash)
		fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x1+26, ly, color)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" dominant-baseline="middle">%s</text>`+"\n", x1+44, ly, html.EscapeString(label))
	}
	ly := float64(padTop + 10 + 22*len(runs))
	fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="4" fill="white" stroke="black" stroke-width="1.5"/>`+"\n", x1+26, ly)
	fmt.Fprintf(w, `<text x="%.1f" y="%.1f" dominant-baseline="middle">sweep stopped here</text>`+"\n", x1+44, ly)
	// The knees of a server's runs pooled, a line each under a heading.
	pooled := 0
	for _, k := range knees {
		if k.Pooled == 0 {
			continue
		}
		if pooled == 0 {
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f" dominant-baseline="middle">knee of all runs pooled:</text>`+"\n", x1+14, ly+30)
		}
		pooled++
		knee := "none"
		if k.Rate > 0 {
			knee = fmt.Sprintf("%d/s", k.Rate)
		}
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" dominant-baseline="middle">%s (%d runs): %s</text>`+"\n", x1+26, ly+30+18*float64(pooled), html.EscapeString(k.Server), k.Pooled, knee)
	}
	fmt.Fprintf(w, "</svg>\n")
	return w.Flush()
}

// sweepRun is one sweep of one server: its rows in ascending rate, the
// n-th of that server's of runs.
type sweepRun struct {
	server string
	n, of  int
	pooled bool // all of's runs pooled (pooledRuns)
	rows   []SweepRow
}

// name is the run's server, with its number when it ran more than once, or
// #all when pooled (Knee.name's).
func (r sweepRun) name() string {
	if r.pooled {
		return pooledName(r.server)
	}
	if r.of > 1 {
		return runName(r.server, r.n)
	}
	return r.server
}

// sweepRuns splits rows, in the order they ran, into runs: a server's run
// ends where its rate stops rising (the sweep began again).
func sweepRuns(rows []SweepRow) []sweepRun {
	var runs []sweepRun
	last := map[string]int{} // server: index of its current run in runs
	count := map[string]int{}
	for _, x := range rows {
		i, ok := last[x.Server]
		if !ok || x.Rate <= runs[i].rows[len(runs[i].rows)-1].Rate {
			count[x.Server]++
			runs = append(runs, sweepRun{server: x.Server, n: count[x.Server]})
			i = len(runs) - 1
			last[x.Server] = i
		}
		runs[i].rows = append(runs[i].rows, x)
	}
	for i := range runs {
		runs[i].of = count[runs[i].server]
	}
	return runs
}

// decade labels 10^d milliseconds.
func decade(d float64) string {
	switch v := math.Pow(10, d); {
	case v >= 1000:
		return fmt.Sprintf("%g s", v/1000)
	case v >= 1:
		return fmt.Sprintf("%g ms", v)
	default:
		return fmt.Sprintf("%g µs", v*1000)
	}
}

// Replot reads a report of a latency sweep (scenario latency or
// hop-latency) written by WriteJSON, works its knees out again from its
// rows (a report from before knees were per run has them merged by
// server) and draws its plot next to it, under the same name with .svg. It
// returns the plot's path.
func Replot(jsonPath string) (string, error) {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return "", err
	}
	var raw struct {
		Report
		Config SweepConfig `json:"config"`
		Rows   []SweepRow  `json:"rows"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return "", fmt.Errorf("%s: %w", jsonPath, err)
	}
	switch {
	case raw.Scenario != "latency" && raw.Scenario != "hop-latency":
		return "", fmt.Errorf("%s: not a latency report (scenario %q): only a latency sweep has a plot", jsonPath, raw.Scenario)
	case len(raw.Rows) == 0:
		return "", fmt.Errorf("%s: a %s report without rows: nothing to plot", jsonPath, raw.Scenario)
	}
	cfg := raw.Config
	cfg.kneeDefaults()
	rep := raw.Report
	rep.Knees, _ = sweepKnees(raw.Rows, cfg)
	path := filepath.Join(filepath.Dir(jsonPath), strings.TrimSuffix(filepath.Base(jsonPath), ".json")+".svg")
	return rep.writePlot(path, raw.Rows, cfg.KneeP99)
}
