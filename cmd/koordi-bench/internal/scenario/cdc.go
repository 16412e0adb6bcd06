package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/schema"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// CDCConfig configures the cdc scenario.
type CDCConfig struct {
	Commits   int // single-row UPDATE commits in the first backlog
	Txs       int // transactions in the second backlog ...
	TxRows    int // ... each inserting this many events
	Reps      int // runs per consumer, in ABBA order; default 2
	Writers   int // connections writing the single-row backlog; default 4
	Consumers []string
	// Profile writes a CPU profile of this process (where the koordi
	// consumer runs) over the koordi runs of each backlog.
	Profile bool `json:"-"`
}

// CDCRow is one consumer's catch-up of one backlog.
type CDCRow struct {
	Backlog       string  `json:"backlog"`
	Consumer      string  `json:"consumer"`
	Run           int     `json:"run"`
	Commits       int     `json:"commits"`
	Rows          int     `json:"rows"`
	Events        int64   `json:"events"`
	Seconds       float64 `json:"seconds"`
	CommitsPerSec float64 `json:"commits_per_second"`
	RowsPerSec    float64 `json:"rows_per_second"`
	Load          string  `json:"loadavg"`
}

const (
	consumerRecv   = "pg_recvlogical"
	consumerKoordi = "koordi"
)

// CDC writes each backlog while no consumer reads, then times
// pg_recvlogical and koordi-realtime's consumer (in-process, counting
// sink) catching it up from slots created before the backlog, with the same
// plugin options (pgoutput, proto_version 1, the same publication, messages).
func CDC(ctx context.Context, e *Env, cfg CDCConfig) (*Report, error) {
	if cfg.Reps <= 0 {
		cfg.Reps = 2
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	cfg.Consumers = []string{consumerRecv, consumerKoordi}
	recv, err := findRecvLogical()
	if err != nil {
		return nil, err
	}
	topo := harness.Topology{Users: 10, Calendars: 10, EventsPerCalendar: 1000}
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	rep := &Report{Scenario: "cdc", Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []CDCRow
	defer func() { rep.Rows = rows }()

	backlogs := []struct {
		name    string
		commits int
		rows    int
		write   func(ctx context.Context) error
	}{
		{fmt.Sprintf("%d single-row commits", cfg.Commits), cfg.Commits, cfg.Commits,
			func(ctx context.Context) error {
				return singleRowBacklog(ctx, e.DatabaseURL, topo, cfg.Commits, cfg.Writers)
			}},
		{fmt.Sprintf("%dx%d-row transactions", cfg.Txs, cfg.TxRows), cfg.Txs, cfg.Txs * cfg.TxRows,
			func(ctx context.Context) error { return insertBacklog(ctx, e.DatabaseURL, cfg.Txs, cfg.TxRows) }},
	}
	for bi, b := range backlogs {
		if b.commits == 0 {
			continue
		}
		slots := map[string][]string{}
		for r := 0; r < cfg.Reps; r++ {
			for _, c := range cfg.Consumers {
				slots[c] = append(slots[c], fmt.Sprintf("bench_%s_%d_%d", map[string]string{consumerRecv: "recv", consumerKoordi: "koordi"}[c], bi, r))
			}
		}
		if err := createSlots(ctx, e.DatabaseURL, slots); err != nil {
			return rep, err
		}
		e.logf("cdc: writing backlog %s", b.name)
		t0 := time.Now()
		if err := b.write(ctx); err != nil {
			return rep, err
		}
		end, err := currentLSN(ctx, e.DatabaseURL)
		if err != nil {
			return rep, err
		}
		e.logf("cdc: backlog written in %.1fs, ends at %X", time.Since(t0).Seconds(), end)
		// ABBA: recv, koordi, koordi, recv, recv, koordi, …
		for r := 0; r < cfg.Reps; r++ {
			order := []string{consumerRecv, consumerKoordi}
			if r%2 == 1 {
				order = []string{consumerKoordi, consumerRecv}
			}
			for _, c := range order {
				row := CDCRow{Backlog: b.name, Consumer: c, Run: r + 1, Commits: b.commits, Rows: b.rows}
				var took time.Duration
				switch c {
				case consumerRecv:
					took, err = runRecvLogical(ctx, recv, e.DatabaseURL, slots[c][r], end)
				case consumerKoordi:
					stop := func() {}
					if cfg.Profile && r == 0 {
						stop = e.startCPUProfile(fmt.Sprintf("cdc-%d-koordi-cpu.pprof", bi))
					}
					took, row.Events, err = runKoordiConsumer(ctx, e.DatabaseURL, slots[c][r], int64(b.rows))
					stop()
				}
				if err != nil {
					return rep, fmt.Errorf("%s on %s: %w", c, b.name, err)
				}
				row.Seconds = took.Seconds()
				row.CommitsPerSec = float64(b.commits) / row.Seconds
				row.RowsPerSec = float64(b.rows) / row.Seconds
				row.Load = harness.LoadAvg()
				e.logf("cdc: %s run %d: %.2fs, %.0f commits/s, %.0f rows/s (load %s)", c, r+1, row.Seconds, row.CommitsPerSec, row.RowsPerSec, row.Load)
				rows = append(rows, row)
			}
		}
		if err := dropSlots(ctx, e.DatabaseURL, slots); err != nil {
			return rep, err
		}
		var tk, tr float64
		for _, x := range rows {
			if x.Backlog != b.name {
				continue
			}
			if x.Consumer == consumerKoordi {
				tk += x.Seconds
			} else {
				tr += x.Seconds
			}
		}
		if tk > 0 {
			v := tr / tk
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "catch-up rate, " + b.name, Subject: consumerKoordi, Baseline: consumerRecv, Value: v, Goal: ">= 0.9", Met: v >= 0.9})
		}
	}
	return rep, nil
}

func createSlots(ctx context.Context, url string, slots map[string][]string) error {
	return withConn(ctx, url, func(conn *pgx.Conn) error {
		for _, names := range slots {
			for _, s := range names {
				if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, s); err != nil {
					return err
				}
				if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s); err != nil {
					return fmt.Errorf("create slot %s: %w", s, err)
				}
			}
		}
		return nil
	})
}

func dropSlots(ctx context.Context, url string, slots map[string][]string) error {
	return withConn(ctx, url, func(conn *pgx.Conn) error {
		for _, names := range slots {
			for _, s := range names {
				if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, s); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func withConn(ctx context.Context, url string, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return f(conn)
}

func currentLSN(ctx context.Context, url string) (uint64, error) {
	var lsn uint64
	err := withConn(ctx, url, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0')::bigint`).Scan(&lsn)
	})
	return lsn, err
}

// singleRowBacklog commits n single-row title updates over workers
// connections: commit k updates event (k / Calendars) mod EventsPerCalendar
// of calendar k mod Calendars (rows repeat once every event was updated).
func singleRowBacklog(ctx context.Context, url string, t harness.Topology, n, workers int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				c := k % t.Calendars
				ev := (k / t.Calendars) % t.EventsPerCalendar
				if _, err := conn.Exec(ctx, `UPDATE events SET title = $1 WHERE id = $2`, stamp(), harness.EventID(c, ev)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// insertBacklog commits txs transactions of rows inserted events each.
func insertBacklog(ctx context.Context, url string, txs, rows int) error {
	return withConn(ctx, url, func(conn *pgx.Conn) error {
		for i := 0; i < txs; i++ {
			if _, err := conn.Exec(ctx, `INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time)
				SELECT $1, 'backlog-' || $2::int || '-' || g, 'bench:0', now(), now() + interval '1 hour'
				FROM generate_series(1, $3::int) g`, harness.CalendarID(i%10), i, rows); err != nil {
				return fmt.Errorf("insert transaction %d: %w", i, err)
			}
		}
		return nil
	})
}

// runRecvLogical streams slot to /dev/null until end and returns the wall
// time of the whole process (connect, stream, exit).
func runRecvLogical(ctx context.Context, bin, url, slot string, end uint64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(recvLogicalArgs(url, slot), "--no-loop", "-E", fmt.Sprintf("%X/%X", end>>32, uint32(end)))...)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(t0)
	if err != nil {
		return took, fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	return took, nil
}

// runKoordiConsumer runs the cdc consumer on slot with a sink that counts
// events, until want events arrived; it returns the time from Run to the
// last one.
func runKoordiConsumer(ctx context.Context, url, slot string, want int64) (time.Duration, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := cdc.New(cdc.Config{ConnString: url, SlotName: slot, Publication: harness.Publication})
	if err != nil {
		return 0, 0, err
	}
	var n atomic.Int64
	var doneAt atomic.Int64
	t0 := time.Now()
	err = c.Run(ctx, cdc.SinkFunc(func(_ context.Context, tx schema.Transaction) error {
		if n.Add(int64(len(tx.Events))) >= want && doneAt.Load() == 0 {
			doneAt.Store(int64(time.Since(t0)))
			cancel()
		}
		return nil
	}))
	if doneAt.Load() == 0 {
		if err == nil || errors.Is(err, context.Canceled) {
			err = errors.New("consumer stopped early")
		}
		return time.Since(t0), n.Load(), fmt.Errorf("koordi consumer: %d of %d events: %w", n.Load(), want, err)
	}
	return time.Duration(doneAt.Load()), n.Load(), nil
}

// findRecvLogical finds pg_recvlogical of the server's version: next to
// initdb (pgcluster.BinDir), following a symlink (/usr/local/bin/initdb ->
// /usr/lib/postgresql/15/bin/initdb), or on PATH.
func findRecvLogical() (string, error) {
	bin, err := pgcluster.BinDir()
	if err != nil {
		return "", err
	}
	candidates := []string{filepath.Join(bin, "pg_recvlogical")}
	if real, err := filepath.EvalSymlinks(filepath.Join(bin, "initdb")); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(real), "pg_recvlogical"))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	if p, err := exec.LookPath("pg_recvlogical"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("pg_recvlogical not found (looked in %v and PATH)", candidates)
}

// startCPUProfile profiles this process into file under the profile
// directory until the returned function is called.
func (e *Env) startCPUProfile(file string) func() {
	dir := e.PprofDir
	if dir == "" {
		dir = e.ResultsDir
	}
	f, err := os.Create(filepath.Join(dir, file))
	if err != nil {
		e.logf("profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		e.logf("profile: %v", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
