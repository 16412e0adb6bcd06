package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/raw"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

// DeliveryConfig configures the fanout scenario.
type DeliveryConfig struct {
	Servers []string // in run order
	Clients int      // sockets; client i logs in as user i mod Users
	Users   int      // default Clients
	// RoomSize is the number of users per calendar (Calendars =
	// Users/RoomSize).
	RoomSize          int
	EventsPerCalendar int // default 100
	// Backlog is the number of transactions, each updating one event per
	// calendar, written as fast as possible.
	Backlog int
	// LiveBacklog streams the backlog to servers that read a replication
	// slot while the SQL writer writes it, as fan-out measured before
	// 2026-12-01 22:30 UTC: their rate is then the writer's (PostgreSQL
	// commits on the same cores), not theirs. By default the backlog is
	// held in WAL (the server's walsender stopped, SIGSTOP) until it is all
	// written, and the clock starts when it is released: all there at
	// once, as raw's and gateway's in-memory backlogs are. Latency then
	// still counts from each UPDATE, so it includes the hold.
	LiveBacklog bool
	Sources     int // client source addresses; default 8
	// Profile takes a CPU profile (and a heap profile at the end) of
	// servers that expose pprof (inproc, raw) during the write phase.
	Profile bool
}

func (c *DeliveryConfig) defaults() error {
	return checkRooms(&c.Users, c.Clients, c.RoomSize, &c.EventsPerCalendar)
}

func checkRooms(users *int, clients, roomSize int, events *int) error {
	if *users <= 0 {
		*users = clients
	}
	if roomSize <= 0 || *users%roomSize != 0 {
		return fmt.Errorf("users (%d) must be a multiple of the room size (%d)", *users, roomSize)
	}
	if *events <= 0 {
		*events = 100
	}
	return nil
}

// DeliveryRow is one server's figures.
type DeliveryRow struct {
	Server         string  `json:"server"`
	Clients        int     `json:"clients"`
	RoomSize       int     `json:"room_size"`
	ConnectSeconds float64 `json:"connect_seconds"`
	Commits        int64   `json:"commits"`
	WriteSeconds   float64 `json:"write_seconds"`
	// Held: the backlog was held in WAL while written and the clock
	// started at its release (DeliveryConfig.LiveBacklog unset).
	Held            bool          `json:"held,omitempty"`
	WriterBehind    time.Duration `json:"writer_behind_ns,omitempty"`
	DeliverySeconds float64       `json:"delivery_seconds"`
	MsgsPerSec      float64       `json:"delivered_per_second"`
	Latency         stats.Summary `json:"latency"`
	Accounting      accounting    `json:"accounting"`
	RSSBefore       int64         `json:"rss_before_bytes"`
	RSSConnected    int64         `json:"rss_connected_bytes"`
	RSSAfter        int64         `json:"rss_after_bytes"`
	RSSPerConn      float64       `json:"rss_per_connection_bytes"`
	ServerCores     float64       `json:"server_cpu_cores"`
	PGCores         float64       `json:"postgres_cpu_cores,omitempty"`
	BenchCores      float64       `json:"bench_cpu_cores"`
	// System calls over the delivery: the server's writes and the clients'
	// reads (this process's). raw writes each socket's backlog at once; a
	// server that writes it in parts makes its clients read more often too.
	ServerWrites int64  `json:"server_write_syscalls"`
	BenchReads   int64  `json:"bench_read_syscalls"`
	Load         string `json:"loadavg"`
	Profile      string `json:"profile,omitempty"`
}

// Delivery runs fanout: every server in turn gets the same clients and the
// same backlog, written as fast as possible.
func Delivery(ctx context.Context, e *Env, name string, cfg DeliveryConfig) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.Backlog <= 0 {
		return nil, fmt.Errorf("%s: no backlog", name)
	}
	topo := harness.Topology{Users: cfg.Users, Calendars: cfg.Users / cfg.RoomSize, EventsPerCalendar: cfg.EventsPerCalendar}
	e.logf("%s: seeding %d users, %d calendars, %d events", name, topo.Users, topo.Calendars, topo.Calendars*topo.EventsPerCalendar)
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(cfg.Users)
	if err != nil {
		return nil, err
	}
	rep := &Report{Scenario: name, Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []DeliveryRow
	defer func() { rep.Rows = rows }()
	for _, s := range cfg.Servers {
		row, err := e.fanoutOne(ctx, name, s, cfg, topo, tokens)
		if err != nil {
			return rep, fmt.Errorf("%s on %s: %w", name, s, err)
		}
		rows = append(rows, row)
	}
	var node, rawRow, gwRow *DeliveryRow
	for i := range rows {
		switch rows[i].Server {
		case "node":
			node = &rows[i]
		case "raw":
			rawRow = &rows[i]
		case "gateway":
			gwRow = &rows[i]
		}
	}
	for _, x := range rows {
		if x.Server == "node" || x.Server == "raw" {
			continue
		}
		if node != nil && node.MsgsPerSec > 0 {
			v := x.MsgsPerSec / node.MsgsPerSec
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "delivered msgs/s", Subject: x.Server, Baseline: "node", Value: v, Goal: ">= 5", Met: v >= 5})
		}
		if rawRow != nil && rawRow.MsgsPerSec > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "delivered msgs/s", Subject: x.Server, Baseline: "raw", Value: x.MsgsPerSec / rawRow.MsgsPerSec})
		}
		// What PostgreSQL and the CDC path cost beside the same gateway.
		if gwRow != nil && x.Server != "gateway" && gwRow.MsgsPerSec > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "delivered msgs/s", Subject: x.Server, Baseline: "gateway", Value: x.MsgsPerSec / gwRow.MsgsPerSec})
		}
	}
	for _, x := range rows {
		if lost := x.Accounting.Lost; lost > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "lost deliveries", Subject: x.Server, Baseline: "expected",
				Value: float64(lost) / float64(max(x.Accounting.Expected, 1)), Goal: "0", Met: false})
		}
	}
	return rep, nil
}

// session is one server started and a fleet connected to it.
type session struct {
	srv *server
	f   *fleet
	row DeliveryRow // server, clients, connect time and RSS filled in
	// log is where the server's output is kept when the session closes
	// ("": not kept).
	log string
}

func (s *session) close() {
	s.f.close()
	s.srv.stop()
	if s.log != "" && s.srv.output != nil {
		if err := os.MkdirAll(filepath.Dir(s.log), 0o755); err == nil {
			_ = os.WriteFile(s.log, []byte(s.srv.output()), 0o644)
		}
	}
}

// serverLog names the file a session's server output is kept in: the
// scenario, the server and when it started, under ResultsDir.
func (e *Env) serverLog(scenario, srvName string) string {
	if e.ResultsDir == "" {
		return ""
	}
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, srvName)
	return filepath.Join(e.ResultsDir, fmt.Sprintf("%s-%s-%s.log", scenario, safe, time.Now().UTC().Format("20060102T150405Z")))
}

// open starts srvName and connects clients sockets to it.
func (e *Env) open(ctx context.Context, name, srvName string, clients, roomSize, sources int, tokens func(int) string) (*session, error) {
	row := DeliveryRow{Server: srvName, Clients: clients, RoomSize: roomSize}
	srv, err := e.startServer(ctx, srvName)
	if err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond) // let start-up allocation settle
	row.RSSBefore = srv.sample().serverRSS
	e.logf("%s/%s: connecting %d clients to %s", name, srvName, clients, srv.url)
	f, took, err := connect(ctx, fleetConfig{URLs: srv.targets(), Tokens: tokens, N: clients, ReadyEvent: srv.readyEvent, Sources: sources})
	if err != nil {
		srv.stop()
		return nil, err
	}
	row.ConnectSeconds = took.Seconds()
	time.Sleep(time.Second)
	row.RSSConnected = srv.sample().serverRSS
	if clients > 0 {
		row.RSSPerConn = float64(row.RSSConnected-row.RSSBefore) / float64(clients)
	}
	e.logf("%s/%s: connected in %.1fs, RSS %s -> %s", name, srvName, took.Seconds(), mib(row.RSSBefore), mib(row.RSSConnected))
	return &session{srv: srv, f: f, row: row, log: e.serverLog(name, srvName)}, nil
}

// profile starts the server's CPU profile (if it has pprof and profiling
// is on) and this process's; the returned function ends both and returns
// the server profile's path.
func (e *Env) profile(on bool, srv *server, file string, seconds int) func() string {
	if !on {
		return func() string { return "" }
	}
	var done chan string
	if srv.pprof != "" {
		done = make(chan string, 1)
		go func() {
			done <- e.fetchProfile(srv.pprof, file+"-cpu.pprof", fmt.Sprintf("profile?seconds=%d", seconds))
		}()
	}
	// The load generator's own profile shows whether it is the limit.
	stopBench := e.startCPUProfile(file + "-bench-cpu.pprof")
	return func() string {
		stopBench()
		if done == nil {
			return ""
		}
		path := <-done
		e.fetchProfile(srv.pprof, file+"-heap.pprof", "heap")
		e.fetchProfile(srv.pprof, file+"-allocs.pprof", "allocs")
		return path
	}
}

func (e *Env) fanoutOne(ctx context.Context, name, srvName string, cfg DeliveryConfig, topo harness.Topology, tokens func(int) string) (DeliveryRow, error) {
	s, err := e.open(ctx, name, srvName, cfg.Clients, cfg.RoomSize, cfg.Sources, tokens)
	if err != nil {
		return DeliveryRow{Server: srvName}, err
	}
	defer s.close()
	row, f := s.row, s.f
	release := func() {}
	if s.srv.slot != "" && !cfg.LiveBacklog {
		if release, err = holdStream(ctx, e.DatabaseURL, s.srv.slot); err != nil {
			return row, err
		}
		defer release()
		row.Held = true
	}
	profileFile := fmt.Sprintf("%s-%s", name, srvName)
	stopProfile := func() string { return "" }
	if !row.Held {
		// raw's and gateway's write is their whole publishing.
		stopProfile = e.profile(cfg.Profile, s.srv, profileFile, 10)
	}
	s0 := s.srv.sample()
	f.recording.Store(true)
	perCal, err := e.writeBacklog(ctx, s.srv, topo, cfg.Backlog)
	row.Commits = int64(cfg.Backlog)
	row.WriteSeconds = time.Since(s0.at).Seconds()
	if err != nil {
		stopProfile()
		return row, err
	}
	if row.Held {
		stopProfile = e.profile(cfg.Profile, s.srv, profileFile, 10)
		s0 = s.srv.sample()
		release()
	}
	var want int64
	for i := 0; i < cfg.Clients; i++ {
		want += perCal[topo.CalendarOf(i%cfg.Users)]
	}
	last := f.waitFor(ctx, want, 15*time.Second, 0)
	s1 := s.srv.sample()
	s1.at = last
	row.DeliverySeconds = last.Sub(s0.at).Seconds()
	row.Accounting = f.account(func(i int) int64 { return perCal[topo.CalendarOf(i%cfg.Users)] })
	if row.DeliverySeconds > 0 {
		row.MsgsPerSec = float64(row.Accounting.Delivered) / row.DeliverySeconds
	}
	row.Latency = f.lat.Load().Summarize()
	row.ServerCores, row.BenchCores = cores(s0, s1)
	row.PGCores = pgCores(s0, s1)
	row.ServerWrites, row.BenchReads = s1.serverWrites-s0.serverWrites, s1.benchReads-s0.benchReads
	row.RSSAfter = s1.serverRSS
	row.Load = harness.LoadAvg()
	row.Profile = stopProfile()
	e.logf("%s/%s: %d/%d delivered in %.2fs (%.0f/s), p50 %s p99 %s, server %.2f cores, bench %.2f cores, server writes %d, client reads %d",
		name, srvName, row.Accounting.Delivered, row.Accounting.Expected, row.DeliverySeconds, row.MsgsPerSec,
		row.Latency.P50, row.Latency.P99, row.ServerCores, row.BenchCores, row.ServerWrites, row.BenchReads)
	return row, nil
}

// writeBacklog writes the fan-out backlog: through SQL, or, for raw, as
// raw's in-memory schedule.
func (e *Env) writeBacklog(ctx context.Context, srv *server, t harness.Topology, txs int) ([]int64, error) {
	if srv.control == "" {
		return writeBacklog(ctx, e.DatabaseURL, t, txs)
	}
	if srv.sqlLoad { // main refuses it before anything starts; a caller of this package may not
		return nil, errors.New("gateway-pg stands beside a SQL load at a rate: it runs in latency and hop, not with a backlog")
	}
	res, err := raw.Start(ctx, srv.control, raw.Plan{Calendars: t.Calendars, EventsPerCalendar: t.EventsPerCalendar, Backlog: txs})
	return res.PerCal, err
}

// writeRate commits rate single-row updates a second for d: through SQL
// (writeSQL), or, for raw and gateway, as the server's in-memory schedule;
// for gateway-pg both, the schedule's being the deliveries.
func (e *Env) writeRate(ctx context.Context, srv *server, t harness.Topology, rate int, d time.Duration, workers int) (rateResult, error) {
	if srv.control == "" {
		return e.writeSQL(ctx, t, rate, d, workers)
	}
	if !srv.sqlLoad {
		return e.runSchedule(ctx, srv, t, rate, d)
	}
	// The same commits through SQL, the way koordi gets them, for the
	// slot's reader only.
	sqlCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		r   rateResult
		err error
	}
	sql := make(chan result, 1)
	go func() {
		r, err := e.writeSQL(sqlCtx, t, rate, d, workers)
		sql <- result{r, err}
	}()
	res, err := e.runSchedule(ctx, srv, t, rate, d)
	if err != nil {
		cancel() // no schedule ran: the load has nothing to stand beside
	}
	load := <-sql
	res.CPU = load.r.CPU // the writer process's, as koordi's row has it
	switch want := float64(rate) * d.Seconds(); {
	case load.err != nil && err == nil:
		err = fmt.Errorf("SQL load beside the schedule: %w", load.err)
	case load.err != nil:
	case float64(load.r.Commits) < 0.99*want:
		e.logf("%s: the SQL load beside the schedule made only %d of %.0f commits: PostgreSQL carried less than beside koordi", srv.name, load.r.Commits, want)
	case load.r.Behind > 50*time.Millisecond:
		// Behind at saturation, as koordi's writer is then too, is the load.
		e.logf("%s: the SQL load beside the schedule fell up to %s behind it", srv.name, load.r.Behind.Round(time.Millisecond))
	}
	return res, err
}

// writeSQL commits through SQL from this process or, with
// Env.WriterProcess, from a writer process of its own (its CPU in CPU).
func (e *Env) writeSQL(ctx context.Context, t harness.Topology, rate int, d time.Duration, workers int) (rateResult, error) {
	if !e.WriterProcess {
		return writeRate(ctx, e.DatabaseURL, t, rate, d, workers)
	}
	r, cpu, err := e.writeRateProcess(ctx, t, rate, d, workers)
	r.CPU = cpu
	return r, err
}

// runSchedule runs the server's in-memory schedule (raw.Plan).
func (e *Env) runSchedule(ctx context.Context, srv *server, t harness.Topology, rate int, d time.Duration) (rateResult, error) {
	res, err := raw.Start(ctx, srv.control, raw.Plan{Calendars: t.Calendars, EventsPerCalendar: t.EventsPerCalendar, Rate: rate, Duration: d})
	return rateResult{Commits: res.Commits, Seconds: res.Seconds, Behind: res.Behind, perCal: res.PerCal}, err
}

// fetchProfile saves base/debug/pprof/<what> under PprofDir.
func (e *Env) fetchProfile(base, file, what string) string {
	dir := e.PprofDir
	if dir == "" {
		dir = e.ResultsDir
	}
	resp, err := http.Get(base + "/debug/pprof/" + what)
	if err != nil {
		e.logf("pprof %s: %v", what, err)
		return ""
	}
	defer resp.Body.Close()
	path := filepath.Join(dir, file)
	out, err := os.Create(path)
	if err != nil {
		e.logf("pprof %s: %v", what, err)
		return ""
	}
	defer out.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		e.logf("pprof %s: %v", what, err)
	}
	return path
}
