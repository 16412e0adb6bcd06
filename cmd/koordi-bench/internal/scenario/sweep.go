package scenario

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

// SweepConfig configures the latency scenario: write-to-receive latency
// while the offered commit rate steps up, one bounded step per rate, on
// one set of connected clients per server.
type SweepConfig struct {
	// Scenario names the report and the servers' logs; default "latency"
	// (hop runs it as "hop-latency").
	Scenario          string
	Servers           []string
	Clients           int
	Users             int // default Clients
	RoomSize          int
	EventsPerCalendar int   // default 100
	Rates             []int // commits per second, swept in ascending order
	// Step is how long each rate is written; the first Warmup of it is
	// not recorded.
	Step    time.Duration
	Warmup  time.Duration
	Writers int // SQL connections; default 8
	Sources int
	// KneeP99 is the latency goal the knee is taken at; default 25 ms.
	KneeP99 time.Duration
	// A server's sweep stops after a step that delivered less than
	// MinDelivered of the offered rate (default 0.95), lost deliveries,
	// or had a p99 over MaxP99 (default 5 s).
	MinDelivered float64
	MaxP99       time.Duration
	Profile      bool // CPU profiles of servers with pprof, per step
	// StallRetries is how many times a step that missed the p99 goal
	// because of machine stalls alone (stallRetry) is run again; 0: never,
	// and no stall probe runs.
	StallRetries int
}

func (c *SweepConfig) defaults() error {
	if err := checkRooms(&c.Users, c.Clients, c.RoomSize, &c.EventsPerCalendar); err != nil {
		return err
	}
	if c.Scenario == "" {
		c.Scenario = "latency"
	}
	if len(c.Rates) == 0 {
		return fmt.Errorf("latency: no rates")
	}
	c.Rates = slices.Clone(c.Rates)
	slices.Sort(c.Rates)
	c.Rates = slices.Compact(c.Rates)
	if c.Rates[0] <= 0 {
		return fmt.Errorf("latency: rate %d", c.Rates[0])
	}
	if c.Step <= 0 {
		c.Step = 10 * time.Second
	}
	if c.Warmup < 0 || c.Warmup >= c.Step {
		c.Warmup = c.Step / 5
	}
	if c.Writers <= 0 {
		c.Writers = 8
	}
	c.kneeDefaults()
	if c.MaxP99 <= 0 {
		c.MaxP99 = 5 * time.Second
	}
	if c.StallRetries < 0 {
		c.StallRetries = 0
	}
	return nil
}

// kneeDefaults sets what a knee is taken at, where unset: p99 within 25 ms,
// delivering at least 0.95 of the offered rate.
func (c *SweepConfig) kneeDefaults() {
	if c.KneeP99 <= 0 {
		c.KneeP99 = 25 * time.Millisecond
	}
	if c.MinDelivered <= 0 {
		c.MinDelivered = 0.95
	}
}

// SweepRow is one server's figures at one offered rate.
type SweepRow struct {
	Server       string        `json:"server"`
	Rate         int           `json:"rate"` // offered commits/s
	Clients      int           `json:"clients"`
	RoomSize     int           `json:"room_size"`
	Commits      int64         `json:"commits"`
	WriteSeconds float64       `json:"write_seconds"`
	WriterBehind time.Duration `json:"writer_behind_ns,omitempty"`
	// WriterCores is the SQL writer process's CPU (--writer-process; 0: it
	// ran in the bench's process, or the server has its own schedule).
	WriterCores float64 `json:"writer_cpu_cores,omitempty"`
	// Offered is the deliveries a second the schedule asked for;
	// Delivered those that arrived, over the step and its drain
	// (DeliverySeconds, from the first write to the last delivery).
	Offered         float64       `json:"offered_per_second"`
	Delivered       float64       `json:"delivered_per_second"`
	DeliveredRatio  float64       `json:"delivered_ratio"`
	DeliverySeconds float64       `json:"delivery_seconds"`
	Latency         stats.Summary `json:"latency"`
	// LatencyCounts is Latency's histogram, kept so that the runs of a
	// server can be pooled (pooledRuns); nil in reports from before.
	LatencyCounts *stats.Counts `json:"latency_counts,omitempty"`
	Accounting    accounting    `json:"accounting"`
	ServerCores   float64       `json:"server_cpu_cores"`
	PGCores       float64       `json:"postgres_cpu_cores,omitempty"`
	// Autovacuums is how many autovacuum and autoanalyze runs of the
	// database's tables ended during the step: housekeeping of the rows
	// the writer updates, whose CPU and locks a server reading PostgreSQL
	// shares the machine with and raw does not.
	Autovacuums int64   `json:"autovacuums,omitempty"` // -1: not counted (the query failed)
	BenchCores  float64 `json:"bench_cpu_cores"`
	Load        string  `json:"loadavg"`
	// Slow are the stretches of the step, its warmup included, whose
	// writes had a delivery later than the knee's limit.
	Slow []SlowWindow `json:"slow_windows,omitempty"`
	// MachineStalls are the stalls the stall probe saw from the step's
	// first write to its last delivery (see MachineStall).
	MachineStalls []MachineStall `json:"machine_stalls,omitempty"`
	// Retried describes the runs of this step that missed the goal because
	// of machine stalls alone and were run again (SweepConfig.StallRetries).
	Retried []string `json:"retried,omitempty"`
	// Stopped says why the server's sweep ended after this step.
	Stopped string `json:"stopped,omitempty"`
	Profile string `json:"profile,omitempty"`
}

// Knee is a server's highest offered rate whose p99 met the goal, in one
// run (the n-th of a server named more than once; 0: its only run), or in
// all its runs pooled (Pooled: how many).
type Knee struct {
	Server string        `json:"server"`
	Run    int           `json:"run,omitempty"`
	Pooled int           `json:"pooled_runs,omitempty"`
	Rate   int           `json:"rate"` // 0: not met at the lowest rate
	P99    time.Duration `json:"p99_limit_ns"`
	// Also lists higher rates that met the goal after one that did not
	// (the noise of a shared machine).
	Also    []int `json:"also_met_at,omitempty"`
	Stopped int   `json:"stopped_at,omitempty"` // the rate the sweep ended at, if it ended early
}

// name is the knee's server, with its run when it ran more than once
// (koordi#2), or #all for its runs pooled.
func (k Knee) name() string {
	if k.Pooled > 0 {
		return pooledName(k.Server)
	}
	return runName(k.Server, k.Run)
}

func pooledName(server string) string { return server + "#all" }

// runName names the n-th run of server (n 0: its only run).
func runName(server string, n int) string {
	if n == 0 {
		return server
	}
	return fmt.Sprintf("%s#%d", server, n)
}

// passes says whether a step meets the latency goal: p99 within limit,
// delivering at least minDelivered of the offered rate, nothing lost.
func (r SweepRow) passes(limit time.Duration, minDelivered float64) bool {
	return r.Latency.Count > 0 && r.Latency.P99 <= limit && r.DeliveredRatio >= minDelivered && r.Accounting.Lost == 0
}

// kneeOf finds server's knee in rows: the highest rate such that it and
// every lower rate swept passed.
func kneeOf(server string, rows []SweepRow, limit time.Duration, minDelivered float64) Knee {
	k := Knee{Server: server, P99: limit}
	var mine []SweepRow
	for _, r := range rows {
		if r.Server == server {
			mine = append(mine, r)
		}
	}
	slices.SortFunc(mine, func(a, b SweepRow) int { return a.Rate - b.Rate })
	broken := false
	for _, r := range mine {
		switch ok := r.passes(limit, minDelivered); {
		case ok && !broken:
			k.Rate = r.Rate
		case ok:
			k.Also = append(k.Also, r.Rate)
		default:
			broken = true
		}
		if r.Stopped != "" {
			k.Stopped = r.Rate
		}
	}
	return k
}

// fellOver says why a step ends the server's sweep, or "".
func (c *SweepConfig) fellOver(r SweepRow) string {
	switch {
	case r.Accounting.Lost > 0:
		return fmt.Sprintf("lost %d deliveries", r.Accounting.Lost)
	case r.Accounting.Dropped > 0:
		return fmt.Sprintf("%d clients dropped", r.Accounting.Dropped)
	case r.DeliveredRatio < c.MinDelivered:
		return fmt.Sprintf("delivered %.0f%% of the offered rate (< %.0f%%)", 100*r.DeliveredRatio, 100*c.MinDelivered)
	case r.Latency.P99 > c.MaxP99:
		return fmt.Sprintf("p99 %s > %s", r.Latency.P99.Round(time.Millisecond), c.MaxP99)
	}
	return ""
}

// Sweep runs the latency scenario.
func Sweep(ctx context.Context, e *Env, cfg SweepConfig) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	topo := harness.Topology{Users: cfg.Users, Calendars: cfg.Users / cfg.RoomSize, EventsPerCalendar: cfg.EventsPerCalendar}
	e.logf("latency: seeding %d users, %d calendars, %d events", topo.Users, topo.Calendars, topo.Calendars*topo.EventsPerCalendar)
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(cfg.Users)
	if err != nil {
		return nil, err
	}
	rep := &Report{Scenario: cfg.Scenario, Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []SweepRow
	defer func() { rep.Rows = rows }()
	var probe *stallProbe
	if cfg.StallRetries > 0 {
		if probe, err = startStallProbe(e.BenchBin); err != nil {
			return rep, err
		}
		defer func() {
			if err := probe.stop(); err != nil {
				e.logf("latency: %v", err)
			}
		}()
	}
	for _, name := range cfg.Servers {
		got, err := e.sweepOne(ctx, name, cfg, topo, tokens, probe)
		rows = append(rows, got...)
		if err != nil {
			return rep, fmt.Errorf("latency on %s: %w", name, err)
		}
	}
	rep.Knees, rep.Ratios = sweepKnees(rows, cfg)
	for _, x := range rows {
		if x.Accounting.Lost > 0 || x.Accounting.Duplicates > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: fmt.Sprintf("lost+duplicated at %d/s", x.Rate), Subject: x.Server, Baseline: "expected",
				Value: float64(x.Accounting.Lost+x.Accounting.Duplicates) / float64(max(x.Accounting.Expected, 1)), Goal: "0", Met: false})
		}
	}
	return rep, nil
}

// sweepKnees finds the knee of every run, of every server's runs pooled,
// and the ratios between them.
func sweepKnees(rows []SweepRow, cfg SweepConfig) (knees []Knee, ratios []Ratio) {
	// A knee per run: a server named twice is two measurements, and the
	// noise between them is the machine's.
	runs := sweepRuns(rows)
	byName := map[string]Knee{}
	for _, run := range runs {
		k := kneeOf(run.server, run.rows, cfg.KneeP99, cfg.MinDelivered)
		if run.of > 1 {
			k.Run = run.n
		}
		knees = append(knees, k)
		byName[k.name()] = k
	}
	for _, run := range pooledRuns(runs) {
		k := kneeOf(run.server, run.rows, cfg.KneeP99, cfg.MinDelivered)
		k.Pooled = run.of
		knees = append(knees, k)
		byName[k.name()] = k
	}
	limit := fmt.Sprintf("p99 <= %s", cfg.KneeP99)
	for _, k := range knees {
		if k.Server == "raw" || k.Server == "node" {
			continue
		}
		ratios = append(ratios, Ratio{Figure: "knee commits/s (" + limit + ")", Subject: k.name(), Baseline: "absolute",
			Value: float64(k.Rate), Goal: ">= 2000", Met: k.Rate >= 2000})
		for _, base := range []string{"raw", "gateway", "gateway-pg", "node"} {
			if base == k.Server {
				continue
			}
			// The baseline's run of the same number (pooled against
			// pooled), or its only one.
			b, ok := byName[Knee{Server: base, Run: k.Run, Pooled: k.Pooled}.name()]
			if !ok {
				b, ok = byName[base]
			}
			if ok && b.Rate > 0 {
				ratios = append(ratios, Ratio{Figure: "knee commits/s", Subject: k.name(), Baseline: b.name(), Value: float64(k.Rate) / float64(b.Rate)})
			}
		}
	}
	return knees, ratios
}

// pooledRuns is, for each server that ran more than once, one run of all
// its runs pooled (named server#all, of: how many): at each rate every run
// reached, its deliveries in one histogram. One run's stall — the shared
// machine's noise, which can decide a 10-s step's p99 — then counts among
// the deliveries of every run at that rate instead of ending the knee of
// that run. A run that stopped at a rate stops the pooled run there. A
// server with a step whose histogram the report lacks (from before it was
// kept) is left out.
func pooledRuns(runs []sweepRun) []sweepRun {
	var servers []string
	byServer := map[string][]sweepRun{}
	for _, r := range runs {
		if r.of < 2 {
			continue
		}
		if _, ok := byServer[r.server]; !ok {
			servers = append(servers, r.server)
		}
		byServer[r.server] = append(byServer[r.server], r)
	}
	var pooled []sweepRun
	for _, server := range servers {
		if p, ok := poolRuns(server, byServer[server]); ok {
			pooled = append(pooled, p)
		}
	}
	return pooled
}

// poolRuns pools one server's runs (see pooledRuns); false if a step has
// no histogram.
func poolRuns(server string, of []sweepRun) (sweepRun, bool) {
	out := sweepRun{server: server, of: len(of), pooled: true}
	for i := 0; ; i++ {
		rate := 0
		for _, r := range of {
			if i >= len(r.rows) || (rate != 0 && r.rows[i].Rate != rate) {
				// Not every run reached it, or their rates differ.
				return out, len(out.rows) > 0
			}
			rate = r.rows[i].Rate
		}
		p := SweepRow{Server: server, Rate: rate}
		var h stats.Histogram
		var offered, delivered float64
		for _, r := range of {
			x := r.rows[i]
			if x.LatencyCounts == nil && x.Latency.Count > 0 {
				return sweepRun{}, false
			}
			if err := h.Add(x.LatencyCounts); err != nil {
				return sweepRun{}, false
			}
			offered, delivered = offered+x.Offered, delivered+x.Delivered
			p.Clients, p.RoomSize = x.Clients, x.RoomSize
			p.Accounting.Expected += x.Accounting.Expected
			p.Accounting.Delivered += x.Accounting.Delivered
			p.Accounting.Lost += x.Accounting.Lost
			p.Accounting.Duplicates += x.Accounting.Duplicates
			p.Accounting.Dropped += x.Accounting.Dropped
			if p.Stopped == "" {
				p.Stopped = x.Stopped
			}
		}
		p.Latency, p.LatencyCounts = h.Summarize(), h.Counts()
		if offered > 0 {
			p.DeliveredRatio = delivered / offered
		}
		out.rows = append(out.rows, p)
		if p.Stopped != "" {
			return out, true
		}
	}
}

func (e *Env) sweepOne(ctx context.Context, name string, cfg SweepConfig, topo harness.Topology, tokens func(int) string, probe *stallProbe) ([]SweepRow, error) {
	s, err := e.open(ctx, cfg.Scenario, name, cfg.Clients, cfg.RoomSize, cfg.Sources, tokens)
	if err != nil {
		return nil, err
	}
	defer s.close()
	var rows []SweepRow
	for i, rate := range cfg.Rates {
		var retried []string
		row, err := e.step(ctx, s, cfg, topo, rate, probe)
		for err == nil && len(retried) < cfg.StallRetries && cfg.stallRetry(row) {
			why := fmt.Sprintf("p99 %s, its late deliveries all at machine stalls %s", ms(row.Latency.P99), describeStalls(row.MachineStalls, cfg.KneeP99))
			e.logf("latency/%s: %d commits/s: %s: step run again", name, rate, why)
			retried = append(retried, why)
			if err = pause(ctx, 300*time.Millisecond); err == nil {
				row, err = e.step(ctx, s, cfg, topo, rate, probe)
			}
		}
		row.Retried = retried
		if err != nil {
			return rows, err
		}
		if why := cfg.fellOver(row); why != "" && i < len(cfg.Rates)-1 {
			row.Stopped = why + ": sweep stopped"
			e.logf("latency/%s: at %d commits/s %s", name, rate, row.Stopped)
		}
		rows = append(rows, row)
		if row.Stopped != "" {
			break
		}
		if err := pause(ctx, 300*time.Millisecond); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// stallRetry says whether a step is to be run again: it missed the goal
// by its p99 alone — nothing lost, no client dropped, the offered rate
// delivered, which a re-run must never hide — and every late delivery of
// it is explained by the machine's own stalls (machineStalled).
func (c *SweepConfig) stallRetry(r SweepRow) bool {
	return r.Latency.Count > 0 && r.Latency.P99 > c.KneeP99 &&
		r.Accounting.Lost == 0 && r.Accounting.Dropped == 0 && r.DeliveredRatio >= c.MinDelivered &&
		machineStalled(r.Slow, r.MachineStalls, c.Warmup, c.KneeP99)
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// describeStalls lists the machine's stalls (see machineStallMin):
// "134ms at +6.55s".
func describeStalls(stalls []MachineStall, limit time.Duration) string {
	var parts []string
	for _, st := range stalls {
		if st.Span >= machineStallMin*limit {
			parts = append(parts, fmt.Sprintf("%s at +%.2fs", st.Span.Round(time.Millisecond), st.At.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// step writes rate commits/s for cfg.Step and waits for their deliveries.
func (e *Env) step(ctx context.Context, s *session, cfg SweepConfig, topo harness.Topology, rate int, probe *stallProbe) (SweepRow, error) {
	f, srv := s.f, s.srv
	row := SweepRow{Server: srv.name, Rate: rate, Clients: cfg.Clients, RoomSize: cfg.RoomSize}
	base := f.snapshot()
	h := &stats.Histogram{}
	f.recording.Store(false)
	f.lat.Store(h)
	stopProfile := e.profile(cfg.Profile, srv, fmt.Sprintf("latency-%s-%d", srv.name, rate), int(cfg.Step.Seconds()))
	av0, avErr := autovacuums(ctx, e.DatabaseURL)
	s0 := srv.sample()
	slots := newTimeline(s0.at, cfg.Step)
	f.slots.Store(slots)
	defer f.slots.Store(nil)
	warm := time.AfterFunc(cfg.Warmup, func() { f.recording.Store(true) })
	r, err := e.writeRate(ctx, srv, topo, rate, cfg.Step, cfg.Writers)
	row.WriteSeconds = time.Since(s0.at).Seconds()
	row.Commits, row.WriterBehind = r.Commits, r.Behind
	if row.WriteSeconds > 0 {
		row.WriterCores = r.CPU.Seconds() / row.WriteSeconds
	}
	if err != nil {
		warm.Stop()
		stopProfile()
		return row, err
	}
	expected := func(i int) int64 { return r.perCal[topo.CalendarOf(i%cfg.Users)] }
	var want int64
	for i := 0; i < cfg.Clients; i++ {
		want += expected(i)
	}
	// A server that falls behind gets time to drain, bounded.
	last := f.waitFor(ctx, base.total+want, 10*time.Second, 2*cfg.Step+30*time.Second)
	warm.Stop()
	f.recording.Store(false)
	s1 := srv.sample()
	s1.at = last
	row.Profile = stopProfile()
	row.DeliverySeconds = last.Sub(s0.at).Seconds()
	row.Accounting = f.accountSince(base, expected)
	row.Offered = float64(want) / cfg.Step.Seconds()
	if row.DeliverySeconds > 0 {
		row.Delivered = float64(row.Accounting.Delivered) / row.DeliverySeconds
	}
	if row.Offered > 0 {
		row.DeliveredRatio = row.Delivered / row.Offered
	}
	row.Latency, row.LatencyCounts = h.Summarize(), h.Counts()
	row.Slow = slots.slow(cfg.KneeP99)
	row.MachineStalls = probe.between(s0.at, last)
	if probe.gone() {
		e.logf("%s: the stall probe ended early: no step is run again for a machine stall from here on", cfg.Scenario)
	}
	row.ServerCores, row.BenchCores = cores(s0, s1)
	row.PGCores = pgCores(s0, s1)
	if av1, err := autovacuums(ctx, e.DatabaseURL); err == nil && avErr == nil {
		row.Autovacuums = av1 - av0
	} else {
		row.Autovacuums = -1
		e.logf("latency/%s: %d commits/s: autovacuums not counted: %v", srv.name, rate, errors.Join(avErr, err))
	}
	row.Load = harness.LoadAvg()
	e.logf("latency/%s: %d commits/s: %d/%d delivered in %.2fs (%.0f of %.0f/s), p50 %s p99 %s, server %.2f cores, bench %.2f cores, autovacuums %d",
		srv.name, rate, row.Accounting.Delivered, row.Accounting.Expected, row.DeliverySeconds, row.Delivered, row.Offered,
		row.Latency.P50.Round(10*time.Microsecond), row.Latency.P99.Round(10*time.Microsecond), row.ServerCores, row.BenchCores, row.Autovacuums)
	for _, w := range row.Slow {
		where := ""
		if w.At < cfg.Warmup {
			where = " (from within the warmup)"
		}
		e.logf("latency/%s: %d commits/s: writes at +%.2fs for %s delivered up to %s late%s", srv.name, rate, w.At.Seconds(), w.Span, w.Worst.Round(time.Millisecond), where)
	}
	for _, st := range row.MachineStalls {
		e.logf("latency/%s: %d commits/s: machine stall of %s at +%.2fs (stall probe)", srv.name, rate, st.Span.Round(time.Millisecond), st.At.Seconds())
	}
	return row, nil
}

// autovacuums is the number of autovacuum and autoanalyze runs PostgreSQL
// has finished on the tables of the database at url.
func autovacuums(ctx context.Context, url string) (int64, error) {
	var n int64
	err := withConn(ctx, url, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint FROM pg_stat_user_tables`).Scan(&n)
	})
	return n, err
}
