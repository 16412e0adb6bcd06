package cdc

import (
	"context"
	"fmt"
	"slices"
	"time"

	ksql "github.com/koordi/koordi-realtime/sql"
)

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
// missing or not in the publication has had its changes lost meanwhile: on
// its return the delivery goroutine brings the state up to date and reports
// the gap ("publication_changed": sync:reset), in order with the
// transactions it delivers (see resync). The session goes on: ending it
// would end a leader's term, and the next term, a fresh consumer perhaps on
// another node, would not know of the gap.
func (c *Consumer) reportTables(problems []ksql.TableProblem) {
	c.mu.Lock()
	old, streamed := c.problems, c.streamed
	if !c.checked {
		// The gauges are shared with earlier consumers of this process (a
		// cluster node's earlier terms): what they reported may have been
		// mended since, and only this consumer's findings count now.
		c.checked = true
		c.m.tableProblems.Reset()
	}
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
	// A standby's state is read afresh when it takes over, and the leader
	// of the moment reports the gap: only a consumer that streamed owes it.
	if lost && streamed {
		c.requestResync()
	}
}

// resyncSettle is how long a session must have streamed before a resync
// runs: a publication dropped and created again looks like its tables
// coming back, and its session fails within moments of starting; the new
// slot created then reports that gap (publication_recreated) and cancels
// the resync, so clients are told once.
const resyncSettle = time.Second

func (c *Consumer) requestResync() {
	c.mu.Lock()
	c.resyncPending = true
	c.mu.Unlock()
	c.wakeResync()
}

func (c *Consumer) wakeResync() {
	select {
	case c.resyncNow <- struct{}{}:
	default: // one wake-up is queued already
	}
}

// cancelResync drops a pending resync: a new slot's bootstrap and reset
// cover its gap.
func (c *Consumer) cancelResync() {
	c.mu.Lock()
	c.resyncPending = false
	c.mu.Unlock()
}

// resync runs on the delivery goroutine, between two transactions: what was
// derived before it is handed to the sink, then the names state is read
// again (the lost changes may have renamed or moved what later events name)
// and the gap reported, so every transaction derived after the reset is
// derived from the new state. Until the session has streamed for
// resyncSettle, or while the database cannot answer, it is tried again a
// little later. It stays pending until it is reported, so a new slot
// created meanwhile (cancelResync) still cancels it, even mid-way.
func (c *Consumer) resync(ctx context.Context) {
	c.mu.Lock()
	pending, since := c.resyncPending, c.streamingAt
	c.mu.Unlock()
	switch {
	case !pending || ctx.Err() != nil:
		return
	case since.IsZero() || time.Since(since) < resyncSettle:
		time.AfterFunc(resyncSettle/4, c.wakeResync)
		return
	}
	if err := c.rebootstrap(ctx); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("could not read the names state again after a watched table came back; retrying", "error", err)
			time.AfterFunc(time.Second, c.wakeResync)
		}
		return
	}
	c.mu.Lock()
	pending = c.resyncPending
	c.resyncPending = false
	c.mu.Unlock()
	if !pending {
		return // a new slot's reset covers it
	}
	c.log.Warn("a watched table is back in the publication: its changes in between are lost; clients told to refetch", "publication", c.cfg.Publication)
	c.reset("publication_changed")
}

func (c *Consumer) rebootstrap(ctx context.Context) error {
	conn, err := c.connect(ctx, false)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if err := c.deriver.Bootstrap(ctx, conn); err != nil {
		return fmt.Errorf("bootstrap names state: %w", err)
	}
	return nil
}
