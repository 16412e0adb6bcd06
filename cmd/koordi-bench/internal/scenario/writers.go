package scenario

import (
	"context"
	"fmt"
	"strconv"
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
