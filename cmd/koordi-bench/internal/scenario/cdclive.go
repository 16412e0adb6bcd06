package scenario

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/gateway/auth"
)

// CDC catch-up while delivering (issue 13.5)
//
// The cdc scenario times koordi's consumer alone, in this process, with a
// counting sink. Here the consumer is the one inside a running server with
// Clients sockets connected that receive every derived event, so decoding,
// derivation, fan-out, the server's writers and the load generator's readers
// all share the machine, as in production after an outage of the stream.
//
// A backlog needs the server's stream to stop while the server keeps its
// sockets: serve's catch-up gate keeps sockets out until its first catch-up
// is done, so a backlog left while serve is down is caught up with no socket
// connected. Instead serve runs, its sockets connect, and then its
// walsender (the PostgreSQL backend streaming serve's slot) is stopped with
// SIGSTOP (so the database must run on this machine under a user this process
// may signal, as the throwaway cluster does): serve, its sockets and their heartbeats go on, nothing is decoded
// or sent, nothing is buffered on the way. The backlog is written, then a
// marker commit that updates the one event of a calendar whose only member
// is a probe socket. SIGCONT resumes the walsender; koordi's time is from
// then until the probe receives the marker: every commit before it was
// decoded, derived and published (Publish is in commit order), while the
// 10,000 sockets received what was published so far. pg_recvlogical reads
// the same WAL from a slot created just before the backlog, exec to exit at
// the marker's end (its connection set-up included, koordi's is already
// open). The two run in turn (ABBA across runs, a new backlog per run);
// pg_recvlogical never runs while the server still delivers. With
// --clients 0 (the control row, ControlRun) the same server catches up with
// only the probe connected.

// CDCLiveConfig configures the cdc-deliver scenario.
type CDCLiveConfig struct {
	Server   string // koordi or inproc (pprof), or a variant (koordi+GOGC=50)
	Clients  []int  // socket counts, one server each; 0 is the control (probe only)
	RoomSize int    // users per calendar; default 100
	Commits  int    // single-row UPDATE commits per backlog
	Writers  int    // default 4
	Reps     int    // backlogs per socket count, ABBA; default 2
	Sources  int
	// Profile takes a CPU profile of the server (inproc) and of this
	// process over koordi's first catch-up.
	Profile bool `json:"-"`
}

// CDCLiveRow is one consumer's catch-up of one backlog.
type CDCLiveRow struct {
	Consumer      string  `json:"consumer"`
	Clients       int     `json:"clients"`
	Run           int     `json:"run"`
	Commits       int     `json:"commits"`
	Seconds       float64 `json:"seconds"`
	CommitsPerSec float64 `json:"commits_per_second"`
	// Server only: deliveries the sockets received while it caught up,
	// and until the last one.
	DuringCatchUp   int64   `json:"delivered_during_catch_up,omitempty"`
	DeliverySeconds float64 `json:"delivery_seconds,omitempty"`
	// DeliveredPerSec is the deliveries until the last one, per second.
	DeliveredPerSec float64 `json:"delivered_per_second,omitempty"`
	// System calls until the marker: the server's writes, its clients' reads
	// (see DeliveryRow).
	ServerWrites int64      `json:"server_write_syscalls,omitempty"`
	BenchReads   int64      `json:"bench_read_syscalls,omitempty"`
	Accounting   accounting `json:"accounting"`
	ServerCores  float64    `json:"server_cpu_cores,omitempty"` // during the catch-up
	BenchCores   float64    `json:"bench_cpu_cores,omitempty"`
	Profile      string     `json:"profile,omitempty"`
	Load         string     `json:"loadavg"`
}

// probe: a user alone in a calendar with one event, outside the topology.
const probeIndex = 1_000_000

// CDCLive runs cdc-deliver.
func CDCLive(ctx context.Context, e *Env, cfg CDCLiveConfig) (*Report, error) {
	if cfg.RoomSize <= 0 {
		cfg.RoomSize = 100
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.Reps <= 0 {
		cfg.Reps = 2
	}
	recv, err := findRecvLogical()
	if err != nil {
		return nil, err
	}
	rep := &Report{Scenario: "cdc-deliver", Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []CDCLiveRow
	defer func() { rep.Rows = rows }()
	for _, n := range cfg.Clients {
		users := max(n, cfg.RoomSize)
		if users%cfg.RoomSize != 0 {
			return rep, fmt.Errorf("clients (%d) must be a multiple of the room size (%d)", n, cfg.RoomSize)
		}
		topo := harness.Topology{Users: users, Calendars: users / cfg.RoomSize, EventsPerCalendar: 100}
		got, err := e.cdcLiveOne(ctx, recv, cfg, n, topo)
		rows = append(rows, got...)
		if err != nil {
			return rep, err
		}
		if n > 0 && e.BenchBin != "" {
			row, err := e.cdcLiveRaw(ctx, cfg, n, topo)
			if err != nil {
				return rep, err
			}
			got = append(got, row)
			rows = append(rows, row)
		}
		var tk, tr, delivered, deliverySecs, rawRate float64
		for _, x := range got {
			switch x.Consumer {
			case consumerRecv:
				tr += x.Seconds
			case "raw":
				rawRate = x.DeliveredPerSec
			default:
				tk += x.Seconds
				delivered += float64(x.Accounting.Delivered)
				deliverySecs += x.DeliverySeconds
			}
		}
		if tk > 0 && tr > 0 {
			v := tr / tk
			rep.Ratios = append(rep.Ratios, Ratio{Figure: fmt.Sprintf("catch-up, %d commits, %d sockets receiving", cfg.Commits, n),
				Subject: cfg.Server, Baseline: consumerRecv, Value: v, Goal: ">= 0.9", Met: v >= 0.9})
		}
		if rawRate > 0 && deliverySecs > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: fmt.Sprintf("deliveries/s until the last, %d sockets", n),
				Subject: cfg.Server, Baseline: "raw", Value: delivered / deliverySecs / rawRate})
		}
	}
	return rep, nil
}

// cdcLiveRaw times raw delivering what the backlog's commits deliver, the
// same frames per socket to the same number of sockets, from memory: the
// machine's own limit for the deliveries of a catch-up, which bounds the
// server's catch-up while its sockets receive (every commit before the
// marker is published only as fast as the sockets' queues are drained).
// raw's schedule updates one event per calendar per transaction, so a
// backlog of Commits/Calendars transactions gives each socket the frames
// the single-row commits give it.
func (e *Env) cdcLiveRaw(ctx context.Context, cfg CDCLiveConfig, clients int, topo harness.Topology) (CDCLiveRow, error) {
	tokens, err := e.tokens(topo.Users)
	if err != nil {
		return CDCLiveRow{}, err
	}
	per := max(cfg.Commits/topo.Calendars, 1)
	d, err := e.fanoutOne(ctx, "cdc-deliver", "raw", DeliveryConfig{Clients: clients, Users: topo.Users, RoomSize: cfg.RoomSize,
		EventsPerCalendar: topo.EventsPerCalendar, Backlog: per, Sources: cfg.Sources}, topo, tokens)
	if err != nil {
		return CDCLiveRow{}, fmt.Errorf("raw: %w", err)
	}
	return CDCLiveRow{Consumer: "raw", Clients: clients, Run: 1, Commits: per * topo.Calendars, Seconds: d.DeliverySeconds,
		DeliverySeconds: d.DeliverySeconds, DeliveredPerSec: d.MsgsPerSec, Accounting: d.Accounting,
		ServerCores: d.ServerCores, BenchCores: d.BenchCores, ServerWrites: d.ServerWrites, BenchReads: d.BenchReads, Load: d.Load}, nil
}

func (e *Env) cdcLiveOne(ctx context.Context, recv string, cfg CDCLiveConfig, clients int, topo harness.Topology) ([]CDCLiveRow, error) {
	var rows []CDCLiveRow
	e.logf("cdc-deliver: seeding %d users in %d calendars, and the probe", topo.Users, topo.Calendars)
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	if err := seedProbe(ctx, e.DatabaseURL); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(topo.Users)
	if err != nil {
		return nil, err
	}
	probeTok, err := auth.Mint([]byte(e.JWTSecret), harness.UserID(probeIndex), "probe@bench.test", time.Now(), 6*time.Hour)
	if err != nil {
		return nil, err
	}
	srv, err := e.startServer(ctx, cfg.Server)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	if srv.slot == "" {
		return nil, fmt.Errorf("server %s: cdc-deliver needs a server with a replication slot (koordi, inproc)", cfg.Server)
	}
	var markerAt atomic.Int64
	var marker atomic.Value // the stamp the probe waits for
	marker.Store("")
	probe, _, err := connect(ctx, fleetConfig{URL: srv.url, Tokens: func(int) string { return probeTok }, N: 1, Sources: 1,
		Handle: func(_ int, name, args []byte) {
			if string(name) != "event:updated" {
				return
			}
			if t, ok := stringField(args, "event_title"); ok && t != "" && t == marker.Load().(string) {
				markerAt.CompareAndSwap(0, time.Now().UnixNano())
			}
		}})
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	defer probe.close()
	var f *fleet
	if clients > 0 {
		e.logf("cdc-deliver/%s: connecting %d sockets", cfg.Server, clients)
		f, _, err = connect(ctx, fleetConfig{URL: srv.url, Tokens: tokens, N: clients, ReadyEvent: srv.readyEvent, Sources: cfg.Sources})
		if err != nil {
			return nil, err
		}
		defer f.close()
	}
	time.Sleep(time.Second)
	for r := 0; r < cfg.Reps; r++ {
		slot := fmt.Sprintf("bench_live_recv_%d", r)
		if err := createSlots(ctx, e.DatabaseURL, map[string][]string{consumerRecv: {slot}}); err != nil {
			return rows, err
		}
		wpid, err := walsenderPID(ctx, e.DatabaseURL, srv.slot)
		if err != nil {
			return rows, err
		}
		if err := syscall.Kill(wpid, syscall.SIGSTOP); err != nil {
			return rows, fmt.Errorf("stop walsender %d: %w", wpid, err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = syscall.Kill(wpid, syscall.SIGCONT)
			}
		}
		defer resume()
		e.logf("cdc-deliver/%s: walsender %d stopped; writing %d commits", cfg.Server, wpid, cfg.Commits)
		t0 := time.Now()
		perCal, err := liveBacklog(ctx, e.DatabaseURL, topo, cfg.Commits, cfg.Writers)
		if err != nil {
			return rows, err
		}
		stampV := stamp()
		marker.Store(stampV)
		markerAt.Store(0)
		if err := withConn(ctx, e.DatabaseURL, func(conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `UPDATE events SET title = $1 WHERE id = $2`, stampV, harness.EventID(probeIndex, 0))
			return err
		}); err != nil {
			return rows, err
		}
		end, err := currentLSN(ctx, e.DatabaseURL)
		if err != nil {
			return rows, err
		}
		e.logf("cdc-deliver/%s: backlog written in %.1fs, ends at %X", cfg.Server, time.Since(t0).Seconds(), end)
		var base snapshot
		if f != nil {
			base = f.snapshot()
		}
		order := []string{consumerRecv, cfg.Server}
		if r%2 == 1 {
			order = []string{cfg.Server, consumerRecv}
		}
		for _, c := range order {
			row := CDCLiveRow{Consumer: c, Clients: clients, Run: r + 1, Commits: cfg.Commits + 1}
			if c == consumerRecv {
				took, err := runRecvLogical(ctx, recv, e.DatabaseURL, slot, end)
				if err != nil {
					return rows, err
				}
				row.Seconds = took.Seconds()
			} else {
				stopProfile := e.profile(cfg.Profile && r == 0, srv, fmt.Sprintf("cdc-deliver-%d-%s", clients, srv.name),
					max(2, int(float64(cfg.Commits)/20_000)))
				var traced chan struct{}
				if cfg.Profile && r == 0 && srv.pprof != "" {
					// An execution trace of the first seconds: how long the
					// stream and delivery goroutines wait to run
					// (go tool trace -pprof=sched).
					traced = make(chan struct{})
					go func() {
						defer close(traced)
						e.fetchProfile(srv.pprof, fmt.Sprintf("cdc-deliver-%d-%s-trace.out", clients, srv.name), "trace?seconds=2")
					}()
				}
				s0 := sample(srv.pid)
				var d0 int64
				if f != nil {
					d0 = f.total.Load()
				}
				resume()
				t := time.Now()
				for markerAt.Load() == 0 && time.Since(t) < 5*time.Minute && ctx.Err() == nil {
					time.Sleep(time.Millisecond)
				}
				if markerAt.Load() == 0 {
					stopProfile()
					return rows, fmt.Errorf("the probe never received the marker")
				}
				done := time.Unix(0, markerAt.Load())
				s1 := sample(srv.pid)
				s1.at = done
				row.Seconds = done.Sub(t).Seconds()
				row.ServerCores, row.BenchCores = cores(s0, s1)
				row.ServerWrites, row.BenchReads = s1.serverWrites-s0.serverWrites, s1.benchReads-s0.benchReads
				if f != nil {
					row.DuringCatchUp = f.total.Load() - d0
					var want int64
					for i := 0; i < clients; i++ {
						want += perCal[topo.CalendarOf(i%topo.Users)]
					}
					last := f.waitFor(ctx, base.total+want, 15*time.Second, 0)
					row.DeliverySeconds = last.Sub(t).Seconds()
					row.Accounting = f.accountSince(base, func(i int) int64 { return perCal[topo.CalendarOf(i%topo.Users)] })
					row.DeliveredPerSec = float64(row.Accounting.Delivered) / row.DeliverySeconds
				}
				row.Profile = stopProfile()
				if traced != nil {
					<-traced
				}
			}
			row.CommitsPerSec = float64(row.Commits) / row.Seconds
			row.Load = harness.LoadAvg()
			e.logf("cdc-deliver/%s: %s run %d: %.2fs (%.0f commits/s), %d delivered during catch-up, all %d/%d after %.2fs (load %s)",
				cfg.Server, c, r+1, row.Seconds, row.CommitsPerSec, row.DuringCatchUp, row.Accounting.Delivered, row.Accounting.Expected, row.DeliverySeconds, row.Load)
			rows = append(rows, row)
		}
		if err := dropSlots(ctx, e.DatabaseURL, map[string][]string{consumerRecv: {slot}}); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// seedProbe adds the probe: a user alone in a calendar with one event.
func seedProbe(ctx context.Context, url string) error {
	return execAllURL(ctx, url,
		fmt.Sprintf(`INSERT INTO users (id, email, name) VALUES ('%s', 'probe@bench.test', 'Probe')`, harness.UserID(probeIndex)),
		fmt.Sprintf(`INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES ('%s', 'Probe', 'https://ics.test/probe', '00000000-0000-4000-b000-000000000000', '%s')`,
			harness.CalendarID(probeIndex), harness.UserID(probeIndex)),
		fmt.Sprintf(`INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id)
			VALUES ('%s', '%s', 'probe@bench.test', 'tok-probe', 'accepted', '%s')`, harness.CalendarID(probeIndex), harness.UserID(probeIndex), harness.UserID(probeIndex)),
		fmt.Sprintf(`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time) VALUES ('%s', '%s', 'uid-probe', 'seed', now(), now() + interval '1 hour')`,
			harness.EventID(probeIndex, 0), harness.CalendarID(probeIndex)),
	)
}

func execAllURL(ctx context.Context, url string, stmts ...string) error {
	return withConn(ctx, url, func(conn *pgx.Conn) error {
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				return fmt.Errorf("%.60s…: %w", s, err)
			}
		}
		return nil
	})
}

// holdStream stops the walsender streaming slot (SIGSTOP): nothing more is
// decoded or sent to its server, which keeps its sockets and heartbeats,
// until the returned release (SIGCONT; once, later calls do nothing). The
// database must run on this machine under a user this process may signal,
// as the throwaway cluster does.
func holdStream(ctx context.Context, url, slot string) (release func(), err error) {
	pid, err := walsenderPID(ctx, url, slot)
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("stop walsender %d: %w", pid, err)
	}
	var once sync.Once
	return func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }, nil
}

// walsenderPID is the backend streaming slot.
func walsenderPID(ctx context.Context, url, slot string) (int, error) {
	var pid *int
	err := withConn(ctx, url, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	})
	if err != nil {
		return 0, fmt.Errorf("walsender of slot %s: %w", slot, err)
	}
	if pid == nil {
		return 0, fmt.Errorf("slot %s is not being streamed", slot)
	}
	return *pid, nil
}

// liveBacklog is singleRowBacklog (commit k updates an event of calendar
// k mod Calendars) that also returns the commits per calendar.
func liveBacklog(ctx context.Context, url string, t harness.Topology, n, workers int) ([]int64, error) {
	perCal := make([]int64, t.Calendars)
	for k := 0; k < n; k++ {
		perCal[k%t.Calendars]++
	}
	return perCal, singleRowBacklog(ctx, url, t, n, workers)
}
