package scenario

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is one scenario run: its configuration, the machine and one row
// per server (or consumer).
type Report struct {
	Scenario string    `json:"scenario"`
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Config   any       `json:"config"`
	Rows     any       `json:"rows"`
	Knees    []Knee    `json:"knees,omitempty"`
	Ratios   []Ratio   `json:"ratios,omitempty"`
	Summary  []string  `json:"summary,omitempty"` // lines printed after the table
	Extra    any       `json:"extra,omitempty"`   // a scenario's own totals (failover: its accounting)
}

// Ratio is one figure of a server against the baseline of the same run;
// without a Goal it is reported, not judged.
type Ratio struct {
	Figure   string  `json:"figure"`
	Subject  string  `json:"subject"`
	Baseline string  `json:"baseline"`
	Value    float64 `json:"value"`
	Goal     string  `json:"goal"`
	Met      bool    `json:"met"`
}

// Machine describes where the figures come from.
type Machine struct {
	CPUs    int    `json:"cpus"`
	Model   string `json:"cpu_model"`
	MemMiB  int64  `json:"mem_mib"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	LoadAvg string `json:"loadavg_at_start"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.Model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		m.MemMiB = kb >> 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func (r *Report) basename() string {
	return fmt.Sprintf("%s-%s", r.Scenario, r.Started.UTC().Format("20060102T150405Z"))
}

// WriteJSON writes the report to dir/<scenario>-<time>.json and returns the path.
func (r *Report) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, r.basename()+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== %s  (%d CPUs %s, load %s at start)\n", r.Scenario, r.Machine.CPUs, r.Machine.Model, r.Machine.LoadAvg)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	switch rows := r.Rows.(type) {
	case []DeliveryRow:
		fmt.Fprintln(tw, "server\tclients\troom\tcommits\tcommits/s\tdelivered\texpected\tlost\tdup\tsecs\tmsgs/s\tp50\tp99\tmax\tRSS idle\tRSS conn\tKiB/conn\tsrv cores\tbench cores\tpg cores\twrites/conn\treads/conn\tload\t")
		for _, x := range rows {
			server := x.Server
			if x.Held {
				server += " (held)" // the clock started at the backlog's release
			}
			perConn := func(n int64) float64 { return float64(n) / float64(max(x.Clients, 1)) }
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%s\t\n",
				server, x.Clients, x.RoomSize, x.Commits, float64(x.Commits)/max(x.WriteSeconds, 1e-9), x.Accounting.Delivered, x.Accounting.Expected,
				x.Accounting.Lost, x.Accounting.Duplicates, x.DeliverySeconds, x.MsgsPerSec,
				ms(x.Latency.P50), ms(x.Latency.P99), ms(x.Latency.Max),
				mib(x.RSSBefore), mib(x.RSSConnected), x.RSSPerConn/1024, x.ServerCores, x.BenchCores, x.PGCores, perConn(x.ServerWrites), perConn(x.BenchReads), x.Load)
		}
	case []SweepRow:
		fmt.Fprintln(tw, "server\tclients\troom\trate\tcommits\tcommits/s\toffered/s\tdelivered/s\tdeliv/off\tp50\tp99\tmax\tlost\tdup\twriter behind\tsrv cores\tbench cores\tpg cores\tautovac\tstall reruns\tload\t  note")
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.3f\t%s\t%s\t%s\t%d\t%d\t%s\t%.2f\t%.2f\t%.2f\t%d\t%d\t%s\t%s\n",
				x.Server, x.Clients, x.RoomSize, x.Rate, x.Commits, float64(x.Commits)/max(x.WriteSeconds, 1e-9), x.Offered, x.Delivered, x.DeliveredRatio,
				ms(x.Latency.P50), ms(x.Latency.P99), ms(x.Latency.Max), x.Accounting.Lost, x.Accounting.Duplicates, ms(x.WriterBehind),
				x.ServerCores, x.BenchCores, x.PGCores, x.Autovacuums, len(x.Retried), x.Load, "  "+x.Stopped)
		}
	case []IdleRow:
		fmt.Fprintln(tw, "server\tconnections\tconnect secs\tRSS before\tRSS after\tKiB/conn\tidle srv cores\tload\t")
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%s\t%.1f\t%.3f\t%s\t\n", x.Server, x.Connections, x.ConnectSeconds,
				mib(x.RSSBefore), mib(x.RSSAfter), x.RSSPerConn/1024, x.IdleCores, x.Load)
		}
	case []BulkRow:
		fmt.Fprintln(tw, "server\tshape\trows\texpect\tsockets ok\tevents\tresets\tdup\tmissing\tupdate secs\tfirst secs\tdeliver secs\tevents/s\tp50\tmax\tRSS before\tHWM before\tHWM after\tpeak sampled\tpeak at\tRSS settled\tsrv cores\tload\t")
		for _, x := range rows {
			a := x.Accounting
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t+%.2fs\t%s\t%.2f\t%s\t\n",
				x.Server, x.Shape, x.Rows, x.Expect, a.Complete, a.Sockets, a.Events, a.BulkResets, a.Duplicates, a.Missing,
				x.UpdateSeconds, x.FirstSeconds, x.DeliverySeconds, x.EventsPerSec, ms(x.Latency.P50), ms(x.Latency.Max),
				mib(x.MemBefore.RSS), mib(x.MemBefore.HWM), mib(x.MemAfter.HWM), mib(x.PeakSampled), x.PeakAtSeconds, mib(x.MemSettled.RSS), x.ServerCores, x.Load)
		}
	case []CDCLiveRow:
		fmt.Fprintln(tw, "consumer\tsockets\trun\tcommits\tsecs\tcommits/s\tdelivered during\tdelivered\texpected\tlost\tdup\tall delivered secs\tdelivered/s\tsrv cores\tbench cores\tsrv writes\tbench reads\tload\t")
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%.0f\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%.2f\t%.2f\t%d\t%d\t%s\t\n", x.Consumer, x.Clients, x.Run, x.Commits,
				x.Seconds, x.CommitsPerSec, x.DuringCatchUp, x.Accounting.Delivered, x.Accounting.Expected, x.Accounting.Lost, x.Accounting.Duplicates,
				x.DeliverySeconds, x.DeliveredPerSec, x.ServerCores, x.BenchCores, x.ServerWrites, x.BenchReads, x.Load)
		}
	case []ClusterIdleRow:
		fmt.Fprintln(tw, "server\tnode\tconnections\tholders\tconnect secs\tRSS before\tRSS after\tKiB/conn\tidle cores\tholders RSS\tdropped\tload\t  failed")
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%s\t%s\t%.2f\t%.3f\t%s\t%d\t%s\t  %s\n", x.Server, x.Node, x.Connections, x.Holders,
				x.ConnectSeconds, mib(x.RSSBefore), mib(x.RSSAfter), x.RSSPerConn/1024, x.IdleCores, mib(x.HolderRSS), x.Dropped, x.Load, x.Failed)
		}
	case []FailoverRow:
		fmt.Fprintln(tw, "server\tround\twriting secs\tsignal\tkilled\tnew leader\tbecame leader ms\tfirst event ms\tworst latency ms\texit ms\trestart secs\tload\t")
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%s\t\n", x.Server, x.Round, x.Running, x.Signal, x.Killed, x.NewLeader,
				x.LeaderMS, x.DeliveryMS, x.WorstMS, x.ExitMS, x.RestartSeconds, x.Load)
		}
	case []SubjectsRow:
		printSubjects(w, rows)
	case []CDCRow:
		fmt.Fprintln(tw, "backlog\tconsumer\trun\tcommits\trows\tevents\tsecs\tcommits/s\trows/s\tload\t")
		for _, x := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%.0f\t%s\t\n", x.Backlog, x.Consumer, x.Run,
				x.Commits, x.Rows, x.Events, x.Seconds, x.CommitsPerSec, x.RowsPerSec, x.Load)
		}
	}
	tw.Flush()
	if rows, ok := r.Rows.([]SweepRow); ok {
		printCurve(w, rows)
	}
	for _, l := range r.Summary {
		fmt.Fprintln(w, l)
	}
	for _, k := range r.Knees {
		fmt.Fprintf(w, "knee %-9s %s\n", k.name(), k.describe())
	}
	for _, q := range r.Ratios {
		if q.Goal == "" {
			fmt.Fprintf(w, "ratio %-34s %s/%s = %.3g\n", q.Figure, q.Subject, q.Baseline, q.Value)
			continue
		}
		met := "MISSED"
		if q.Met {
			met = "met"
		}
		fmt.Fprintf(w, "ratio %-34s %s/%s = %.2f  (goal %s: %s)\n", q.Figure, q.Subject, q.Baseline, q.Value, q.Goal, met)
	}
}

// describe is the knee in words.
func (k Knee) describe() string {
	s := fmt.Sprintf("none: p99 over %s (or under 95%% delivered) at the lowest rate", k.P99)
	if k.Rate > 0 {
		s = fmt.Sprintf("%d commits/s (highest rate up to which every step had p99 <= %s)", k.Rate, k.P99)
	}
	if k.Pooled > 0 {
		s += fmt.Sprintf(", its %d runs' deliveries pooled at each rate", k.Pooled)
	}
	if len(k.Also) > 0 {
		s += fmt.Sprintf("; also met at %v after a miss", k.Also)
	}
	if k.Stopped > 0 {
		s += fmt.Sprintf("; sweep stopped at %d commits/s", k.Stopped)
	}
	return s
}

// printCurve prints p99 by rate, one column per run of a server (koordi#2:
// its second run) and one for all of a server's runs pooled (koordi#all),
// and each one's p99 against the first column's (raw's, when it runs
// first).
func printCurve(w io.Writer, rows []SweepRow) {
	var servers []string
	var rates []int
	p99 := map[string]map[int]time.Duration{}
	runs := sweepRuns(rows)
	for _, run := range append(runs, pooledRuns(runs)...) {
		name := run.name()
		servers = append(servers, name)
		p99[name] = map[int]time.Duration{}
		for _, x := range run.rows {
			if x.Latency.Count > 0 {
				p99[name][x.Rate] = x.Latency.P99
			}
			if !slices.Contains(rates, x.Rate) {
				rates = append(rates, x.Rate)
			}
		}
	}
	slices.Sort(rates)
	if len(servers) == 0 {
		return
	}
	fmt.Fprintln(w, "\np99 by offered rate:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "commits/s\t"
	for _, s := range servers {
		head += s + "\t"
	}
	for _, s := range servers[1:] {
		head += s + "/" + servers[0] + "\t"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rates {
		line := fmt.Sprintf("%d\t", r)
		for _, s := range servers {
			if v, ok := p99[s][r]; ok {
				line += ms(v) + "\t"
			} else {
				line += "-\t"
			}
		}
		for _, s := range servers[1:] {
			b, okb := p99[servers[0]][r]
			v, ok := p99[s][r]
			if ok && okb && b > 0 {
				line += fmt.Sprintf("%.1f\t", float64(v)/float64(b))
			} else {
				line += "-\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}
