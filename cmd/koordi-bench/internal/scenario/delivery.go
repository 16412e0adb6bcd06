package scenario

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

// DeliveryConfig configures the fanout and latency scenarios.
type DeliveryConfig struct {
	Servers []string // in run order; ratios are against the last one
	Clients int      // sockets; client i logs in as user i mod Users
	Users   int      // default Clients
	// RoomSize is the number of users per calendar (Calendars =
	// Users/RoomSize).
	RoomSize          int
	EventsPerCalendar int // default 100
	// Backlog > 0: that many transactions, each updating one event per
	// calendar, written as fast as possible (fanout). Otherwise Rate
	// single-row commits per second for Duration (latency), latencies
	// recorded after Warmup.
	Backlog  int
	Rate     int
	Duration time.Duration
	Warmup   time.Duration
	Writers  int // connections for Rate; default 8
	Sources  int // client source addresses; default 1
	// Profile takes a CPU profile (and a heap profile at the end) of
	// servers that expose pprof (inproc) during the write phase.
	Profile bool
}

func (c *DeliveryConfig) defaults() error {
	if c.Users <= 0 {
		c.Users = c.Clients
	}
	if c.RoomSize <= 0 || c.Users%c.RoomSize != 0 {
		return fmt.Errorf("users (%d) must be a multiple of the room size (%d)", c.Users, c.RoomSize)
	}
	if c.EventsPerCalendar <= 0 {
		c.EventsPerCalendar = 100
	}
	if c.Writers <= 0 {
		c.Writers = 8
	}
	if c.Backlog == 0 && c.Warmup >= c.Duration {
		c.Warmup = c.Duration / 5
	}
	return nil
}

// DeliveryRow is one server's figures.
type DeliveryRow struct {
	Server          string        `json:"server"`
	Clients         int           `json:"clients"`
	RoomSize        int           `json:"room_size"`
	ConnectSeconds  float64       `json:"connect_seconds"`
	Commits         int64         `json:"commits"`
	WriteSeconds    float64       `json:"write_seconds"`
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
	BenchCores      float64       `json:"bench_cpu_cores"`
	Load            string        `json:"loadavg"`
	Profile         string        `json:"profile,omitempty"`
}

// Delivery runs fanout (Backlog > 0) or latency.
func Delivery(ctx context.Context, e *Env, name string, cfg DeliveryConfig) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
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
		row, err := e.deliveryOne(ctx, name, s, cfg, topo, tokens)
		if err != nil {
			return rep, fmt.Errorf("%s on %s: %w", name, s, err)
		}
		rows = append(rows, row)
	}
	var node *DeliveryRow
	for i := range rows {
		if rows[i].Server == "node" {
			node = &rows[i]
		}
	}
	for _, x := range rows {
		if x.Server == "node" {
			continue
		}
		if node != nil && node.MsgsPerSec > 0 && cfg.Backlog > 0 {
			v := x.MsgsPerSec / node.MsgsPerSec
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "delivered msgs/s", Subject: x.Server, Baseline: "node", Value: v, Goal: ">= 5", Met: v >= 5})
		}
		if cfg.Backlog == 0 && x.Latency.Count > 0 {
			p50, p99 := float64(x.Latency.P50)/1e6, float64(x.Latency.P99)/1e6
			rep.Ratios = append(rep.Ratios,
				Ratio{Figure: "latency p50 ms", Subject: x.Server, Baseline: "absolute", Value: p50, Goal: "<= 5", Met: p50 <= 5},
				Ratio{Figure: "latency p99 ms", Subject: x.Server, Baseline: "absolute", Value: p99, Goal: "<= 25", Met: p99 <= 25})
			if node != nil && node.Latency.P50 > 0 {
				rep.Ratios = append(rep.Ratios, Ratio{Figure: "latency p99 vs node", Subject: x.Server, Baseline: "node",
					Value: float64(x.Latency.P99) / float64(node.Latency.P99), Goal: "< 1", Met: x.Latency.P99 < node.Latency.P99})
			}
		}
		if lost := x.Accounting.Lost; lost > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "lost deliveries", Subject: x.Server, Baseline: "expected",
				Value: float64(lost) / float64(max(x.Accounting.Expected, 1)), Goal: "0", Met: false})
		}
	}
	return rep, nil
}

func (e *Env) deliveryOne(ctx context.Context, name, srvName string, cfg DeliveryConfig, topo harness.Topology, tokens func(int) string) (DeliveryRow, error) {
	row := DeliveryRow{Server: srvName, Clients: cfg.Clients, RoomSize: cfg.RoomSize}
	srv, err := e.startServer(ctx, srvName)
	if err != nil {
		return row, err
	}
	defer srv.stop()
	time.Sleep(500 * time.Millisecond) // let start-up allocation settle
	row.RSSBefore = sample(srv.pid).serverRSS
	e.logf("%s/%s: connecting %d clients to %s", name, srvName, cfg.Clients, srv.url)
	f, took, err := connect(ctx, fleetConfig{URL: srv.url, Tokens: tokens, N: cfg.Clients, ReadyEvent: srv.readyEvent, Sources: cfg.Sources})
	if err != nil {
		return row, err
	}
	defer f.close()
	row.ConnectSeconds = took.Seconds()
	time.Sleep(time.Second)
	row.RSSConnected = sample(srv.pid).serverRSS
	if cfg.Clients > 0 {
		row.RSSPerConn = float64(row.RSSConnected-row.RSSBefore) / float64(cfg.Clients)
	}
	e.logf("%s/%s: connected in %.1fs, RSS %s -> %s", name, srvName, took.Seconds(), mib(row.RSSBefore), mib(row.RSSConnected))

	var profDone chan string
	profSeconds := 0
	if cfg.Profile && srv.pprof != "" {
		profSeconds = 10
		if cfg.Backlog == 0 {
			profSeconds = int(cfg.Duration.Seconds())
		}
		profDone = make(chan string, 1)
		go func() {
			profDone <- e.fetchProfile(srv.pprof, fmt.Sprintf("%s-%s-cpu.pprof", name, srvName), fmt.Sprintf("profile?seconds=%d", profSeconds))
		}()
	}

	if cfg.Profile {
		// The load generator's own profile shows whether it is the limit.
		stopBench := e.startCPUProfile(fmt.Sprintf("%s-%s-bench-cpu.pprof", name, srvName))
		defer stopBench()
	}
	s0 := sample(srv.pid)
	var perCal []int64
	if cfg.Backlog > 0 {
		f.recording.Store(true)
		perCal, err = writeBacklog(ctx, e.DatabaseURL, topo, cfg.Backlog)
		row.Commits = int64(cfg.Backlog)
	} else {
		go func() {
			select {
			case <-time.After(cfg.Warmup):
				f.recording.Store(true)
			case <-ctx.Done():
			}
		}()
		var r rateResult
		r, err = writeRate(ctx, e.DatabaseURL, topo, cfg.Rate, cfg.Duration, cfg.Writers)
		perCal, row.Commits, row.WriterBehind = r.perCal, r.Commits, r.Behind
	}
	row.WriteSeconds = time.Since(s0.at).Seconds()
	if err != nil {
		return row, err
	}
	var want int64
	for i := 0; i < cfg.Clients; i++ {
		want += perCal[topo.CalendarOf(i%cfg.Users)]
	}
	last := f.waitFor(ctx, want, 15*time.Second)
	s1 := sample(srv.pid)
	s1.at = last
	row.DeliverySeconds = last.Sub(s0.at).Seconds()
	row.Accounting = f.account(func(i int) int64 { return perCal[topo.CalendarOf(i%cfg.Users)] })
	if row.DeliverySeconds > 0 {
		row.MsgsPerSec = float64(row.Accounting.Delivered) / row.DeliverySeconds
	}
	row.Latency = f.lat.Summarize()
	row.ServerCores, row.BenchCores = cores(s0, s1)
	row.RSSAfter = s1.serverRSS
	row.Load = harness.LoadAvg()
	if profDone != nil {
		row.Profile = <-profDone
		e.fetchProfile(srv.pprof, fmt.Sprintf("%s-%s-heap.pprof", name, srvName), "heap")
		e.fetchProfile(srv.pprof, fmt.Sprintf("%s-%s-allocs.pprof", name, srvName), "allocs")
	}
	e.logf("%s/%s: %d/%d delivered in %.2fs (%.0f/s), p50 %s p99 %s, server %.2f cores, bench %.2f cores",
		name, srvName, row.Accounting.Delivered, row.Accounting.Expected, row.DeliverySeconds, row.MsgsPerSec,
		row.Latency.P50, row.Latency.P99, row.ServerCores, row.BenchCores)
	return row, nil
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
