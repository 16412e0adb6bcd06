package scenario

import (
	"context"
	"fmt"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

// IdleConfig configures the idle scenario.
type IdleConfig struct {
	Servers     []string
	Connections int
	Users       int           // default min(Connections, 10000)
	RoomSize    int           // default 100
	Hold        time.Duration // idle measurement window; default 10s
	Sources     int           // default: 8, or one per 10,000 connections if more
	Profile     bool          // heap and goroutine profiles of servers with pprof (inproc) while idle
}

// IdleRow is one server's figures.
type IdleRow struct {
	Server         string  `json:"server"`
	Connections    int     `json:"connections"`
	Failed         string  `json:"failed,omitempty"`
	ConnectSeconds float64 `json:"connect_seconds"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSAfter       int64   `json:"rss_after_bytes"`
	RSSPerConn     float64 `json:"rss_per_connection_bytes"`
	IdleCores      float64 `json:"idle_server_cpu_cores"`
	Load           string  `json:"loadavg"`
}

// Idle connects Connections sockets to each server and reports the RSS
// delta per connection and the CPU the server uses holding them.
func Idle(ctx context.Context, e *Env, cfg IdleConfig) (*Report, error) {
	if cfg.Users <= 0 {
		cfg.Users = min(cfg.Connections, 10_000)
	}
	if cfg.RoomSize <= 0 {
		cfg.RoomSize = min(100, cfg.Users)
	}
	cfg.Users -= cfg.Users % cfg.RoomSize
	if cfg.Hold <= 0 {
		cfg.Hold = 10 * time.Second
	}
	if cfg.Sources <= 0 {
		cfg.Sources = max(8, (cfg.Connections+9_999)/10_000)
	}
	if have, err := harness.RaiseNoFile(uint64(cfg.Connections) + 1_000); err != nil {
		// Without CAP_SYS_RESOURCE the hard limit stays; each process (this
		// one and the server) can hold about that many sockets.
		e.logf("idle: %v: at most about %d connections per process", err, have-1_000)
	}
	topo := harness.Topology{Users: cfg.Users, Calendars: cfg.Users / cfg.RoomSize, EventsPerCalendar: 1}
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(cfg.Users)
	if err != nil {
		return nil, err
	}
	rep := &Report{Scenario: "idle", Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []IdleRow
	defer func() { rep.Rows = rows }()
	for _, name := range cfg.Servers {
		row, err := e.idleOne(ctx, name, cfg, tokens)
		if err != nil {
			// A server that cannot hold the count is a result, not an abort.
			row.Failed = err.Error()
			e.logf("idle/%s: %v", name, err)
		}
		rows = append(rows, row)
	}
	// A server listed more than once (--servers koordi,node,koordi) is
	// judged by its mean: one run's RSS moves by about ±1.5 KiB per
	// connection with where the collector's last cycle fell in the ramp.
	var names []string
	per := map[string][]float64{}
	for _, x := range rows {
		if x.Failed != "" || x.Server == "raw" {
			continue
		}
		if per[x.Server] == nil {
			names = append(names, x.Server)
		}
		per[x.Server] = append(per[x.Server], x.RSSPerConn)
	}
	mean := func(v []float64) float64 {
		t := 0.0
		for _, x := range v {
			t += x
		}
		return t / float64(len(v))
	}
	node := mean(per["node"])
	for _, name := range names {
		if name == "node" || len(per["node"]) == 0 || node <= 0 {
			continue
		}
		v := mean(per[name]) / node
		fig := "RSS per idle connection"
		if n := len(per[name]); n > 1 || len(per["node"]) > 1 {
			fig = fmt.Sprintf("RSS per idle connection, mean of %d vs %d", n, len(per["node"]))
		}
		rep.Ratios = append(rep.Ratios, Ratio{Figure: fig, Subject: name, Baseline: "node", Value: v, Goal: "<= 0.5", Met: v <= 0.5})
	}
	rep.Summary = nil
	for _, name := range names {
		v := per[name]
		lo, hi := v[0], v[0]
		for _, x := range v {
			lo, hi = min(lo, x), max(hi, x)
		}
		rep.Summary = append(rep.Summary, fmt.Sprintf("%-34s KiB/conn mean %.1f (min %.1f, max %.1f, %d runs)", name, mean(v)/1024, lo/1024, hi/1024, len(v)))
	}
	return rep, nil
}

func (e *Env) idleOne(ctx context.Context, name string, cfg IdleConfig, tokens func(int) string) (IdleRow, error) {
	row := IdleRow{Server: name, Connections: cfg.Connections}
	srv, err := e.startServer(ctx, name)
	if err != nil {
		return row, err
	}
	defer srv.stop()
	time.Sleep(500 * time.Millisecond)
	row.RSSBefore = srv.sample().serverRSS
	e.logf("idle/%s: connecting %d sockets from %d source addresses", name, cfg.Connections, cfg.Sources)
	f, took, err := connect(ctx, fleetConfig{URLs: srv.targets(), Tokens: tokens, N: cfg.Connections, ReadyEvent: srv.readyEvent, Sources: cfg.Sources})
	row.ConnectSeconds = took.Seconds()
	if err != nil {
		return row, err
	}
	defer f.close()
	time.Sleep(2 * time.Second)
	s0 := srv.sample()
	select {
	case <-time.After(cfg.Hold):
	case <-ctx.Done():
		return row, ctx.Err()
	}
	s1 := srv.sample()
	if cfg.Profile && srv.pprof != "" {
		// After the RSS sample: fetching a profile allocates in the server.
		e.fetchProfile(srv.pprof, fmt.Sprintf("idle-%s-heap.pprof", name), "heap?gc=1")
		e.fetchProfile(srv.pprof, fmt.Sprintf("idle-%s-goroutine.txt", name), "goroutine?debug=1")
		e.fetchProfile(srv.pprof, fmt.Sprintf("idle-%s-memstats.txt", name), "heap?debug=1") // runtime.MemStats at its end
	}
	row.RSSAfter = s1.serverRSS
	row.RSSPerConn = float64(row.RSSAfter-row.RSSBefore) / float64(cfg.Connections)
	row.IdleCores, _ = cores(s0, s1)
	row.Load = harness.LoadAvg()
	if n := f.runErrs.Load(); n > 0 {
		return row, fmt.Errorf("%d connections dropped while idle: %v", n, f.firstErr.Load())
	}
	e.logf("idle/%s: %d sockets, RSS %s -> %s (%.1f KiB/conn), %.3f cores idle", name, cfg.Connections,
		mib(row.RSSBefore), mib(row.RSSAfter), row.RSSPerConn/1024, row.IdleCores)
	return row, nil
}
