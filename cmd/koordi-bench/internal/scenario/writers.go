package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

func stamp() string { return stampPrefix + strconv.FormatInt(time.Now().UnixNano(), 10) }

// writeBacklog commits txs transactions as fast as one connection can, each
// updating the title of one event in every calendar (so each transaction
// reaches every room once). It returns the updates per calendar.
func writeBacklog(ctx context.Context, url string, t harness.Topology, txs int) ([]int64, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	counts := make([]int64, t.Calendars)
	ids := make([][]string, max(t.EventsPerCalendar, 1))
	for e := range ids {
		for c := 0; c < t.Calendars; c++ {
			ids[e] = append(ids[e], harness.EventID(c, e))
		}
	}
	for j := 0; j < txs; j++ {
		tag, err := conn.Exec(ctx, `UPDATE events SET title = $1 WHERE id = ANY($2::uuid[])`, stamp(), ids[j%len(ids)])
		if err != nil {
			return counts, fmt.Errorf("backlog transaction %d: %w", j, err)
		}
		if tag.RowsAffected() != int64(t.Calendars) {
			return counts, fmt.Errorf("backlog transaction %d updated %d rows, want %d (seeded?)", j, tag.RowsAffected(), t.Calendars)
		}
		for c := range counts {
			counts[c]++
		}
	}
	return counts, nil
}

// rateResult is what writeRate achieved.
type rateResult struct {
	Commits int64
	Seconds float64
	Behind  time.Duration // the most a commit was behind its schedule
	CPU     time.Duration // of the writer process (--writer-process); 0 when it ran in the bench's
	perCal  []int64
}

// writeRate commits single-row updates at rate per second for d, over
// workers connections, each commit scheduled at start + k/rate (an
// open-loop schedule: a slow commit does not lower the offered rate, it
// makes later ones late, which Behind reports as the most a commit was late).
func writeRate(ctx context.Context, url string, t harness.Topology, rate int, d time.Duration, workers int) (rateResult, error) {
	total := int64(float64(rate) * d.Seconds())
	perCal := make([]atomic.Int64, t.Calendars)
	var next atomic.Int64
	var behind atomic.Int64
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return rateResult{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(context.Background())
			for {
				k := next.Add(1) - 1
				if k >= total {
					return
				}
				at := start.Add(time.Duration(k) * interval)
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait)
				} else {
					for b := behind.Load(); int64(-wait) > b && !behind.CompareAndSwap(b, int64(-wait)); b = behind.Load() {
					}
				}
				c := int(k % int64(t.Calendars))
				e := int(k/int64(t.Calendars)) % max(t.EventsPerCalendar, 1)
				if _, err := conn.Exec(ctx, `UPDATE events SET title = $1 WHERE id = $2`, stamp(), harness.EventID(c, e)); err != nil {
					errs <- fmt.Errorf("commit %d: %w", k, err)
					return
				}
				perCal[c].Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	r := rateResult{Seconds: time.Since(start).Seconds(), Behind: time.Duration(behind.Load()), perCal: make([]int64, t.Calendars)}
	for c := range perCal {
		r.perCal[c] = perCal[c].Load()
		r.Commits += r.perCal[c]
	}
	return r, <-errs
}

// writerReport is what a writer process (WriterMain) prints: its
// rateResult, and the CPU it used.
type writerReport struct {
	Commits int64         `json:"commits"`
	Seconds float64       `json:"seconds"`
	Behind  time.Duration `json:"behind_ns"`
	PerCal  []int64       `json:"per_calendar"`
}

// WriterMain is `koordi-bench write-sql` (--writer-process): writeRate in
// a process of its own, its result as JSON on out, as Koordi's API writes
// from a process of its own. In the bench's process the writer shares the
// CPU the clients get, so its commits fall behind while a burst of
// deliveries is read, which eases the load at a stall; raw and gateway run
// their schedules in their own processes, with the same coupling to
// themselves. Measured both ways on 2026-12-03 (RESULTS.md): a writer
// process of its own made the late deliveries after a step up larger.
func WriterMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("write-sql", flag.ContinueOnError)
	url := fs.String("database-url", "", "database to write to")
	rate := fs.Int("rate", 0, "commits per second")
	d := fs.Duration("duration", 0, "how long")
	workers := fs.Int("workers", 8, "connections")
	cals := fs.Int("calendars", 0, "calendars of the seeded topology")
	events := fs.Int("events", 0, "events per calendar of the seeded topology")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *rate <= 0 || *d <= 0 || *cals <= 0 {
		return errors.New("--database-url, --rate, --duration and --calendars are required")
	}
	r, err := writeRate(ctx, *url, harness.Topology{Calendars: *cals, EventsPerCalendar: *events}, *rate, *d, *workers)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(writerReport{Commits: r.Commits, Seconds: r.Seconds, Behind: r.Behind, PerCal: r.perCal})
}

// writeRateProcess runs writeRate in a writer process (WriterMain) and
// returns its result and the CPU the process used.
func (e *Env) writeRateProcess(ctx context.Context, t harness.Topology, rate int, d time.Duration, workers int) (rateResult, time.Duration, error) {
	cmd := exec.CommandContext(ctx, e.BenchBin, "write-sql", "--database-url", e.DatabaseURL, "--rate", strconv.Itoa(rate),
		"--duration", d.String(), "--workers", strconv.Itoa(workers), "--calendars", strconv.Itoa(t.Calendars), "--events", strconv.Itoa(t.EventsPerCalendar))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return rateResult{}, cpu, fmt.Errorf("writer process: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var rep writerReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return rateResult{}, cpu, fmt.Errorf("writer process's report: %w", err)
	}
	return rateResult{Commits: rep.Commits, Seconds: rep.Seconds, Behind: rep.Behind, perCal: rep.PerCal}, cpu, nil
}
