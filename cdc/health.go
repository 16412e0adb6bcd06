package cdc

import (
	"context"
	"errors"
	"slices"
	"time"

	ksql "github.com/koordi/koordi-realtime/sql"
)

// errTablesMended ends a session when a watched table the publication had
// lost is back: the next session brings the state up to date and reports
// the gap.
var errTablesMended = errors.New("a watched table is back in the publication")

// watchTables is the checker goroutine: every CheckInterval, and at every
// stream start, it checks the watched tables and reports what changed (see
// reportTables). It owns no connection between checks.
func (c *Consumer) watchTables(ctx context.Context) error {
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.checkNow:
		}
		c.checkTables(ctx)
	}
}

// requestCheck asks the checker for a check now (at a stream start).
func (c *Consumer) requestCheck() {
	select {
	case c.checkNow <- struct{}{}:
	default:
	}
}

func (c *Consumer) checkTables(ctx context.Context) {
	conn, err := c.connect(ctx, false)
	if err != nil {
		return // the stream reports the database unreachable
	}
	defer conn.Close(context.Background())
	if err := ksql.PreflightStream(ctx, conn, c.cfg.Publication); err != nil {
		return // nothing streams; the stream reports it
	}
	problems, err := ksql.CheckTables(ctx, conn, c.cfg.Publication)
	if err != nil {
		return
	}
	c.reportTables(problems)
}

// reportTables compares the problems found with the last check's: each new
// one is an error line and a metric of 1 (and /readyz answers 503 while any
// remains), each mended one an info line and a metric of 0. A table that was
// missing or not in the publication has had its changes lost meanwhile: its
// return ends the session so that the next one brings the state up to date
// and reports the gap ("publication_changed": sync:reset).
func (c *Consumer) reportTables(problems []ksql.TableProblem) {
	c.mu.Lock()
	old := c.problems
	c.problems = problems
	c.status.Problems = c.status.Problems[:0:0]
	for _, p := range problems {
		c.status.Problems = append(c.status.Problems, p.Err.Error())
	}
	c.mu.Unlock()
	has := func(list []ksql.TableProblem, p ksql.TableProblem) bool {
		return slices.ContainsFunc(list, func(q ksql.TableProblem) bool { return q.Table == p.Table && q.Problem() == p.Problem() })
	}
	lost := false
	for _, p := range problems {
		if !has(old, p) {
			c.m.tableProblems.WithLabelValues(p.Table, p.Problem()).Set(1)
			c.log.Error("watched table cannot be streamed fully", "table", p.Table, "problem", p.Problem(), "error", p.Err)
		}
	}
	for _, p := range old {
		if has(problems, p) {
			continue
		}
		c.m.tableProblems.WithLabelValues(p.Table, p.Problem()).Set(0)
		c.log.Info("watched table mended", "table", p.Table, "problem", p.Problem())
		lost = lost || p.Problem() != "replica_identity"
	}
	if lost {
		c.mu.Lock()
		c.resync = true
		cancel := c.cancelSession
		c.mu.Unlock()
		if cancel != nil {
			cancel(errTablesMended)
		}
	}
}
