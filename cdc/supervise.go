package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	ksql "github.com/koordi/koordi-realtime/sql"
)

const (
	// backoff bounds between reconnection attempts.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// slotBusyGrace is how long a first start waits for a slot that is
	// still active — typically the walsender of a process that was just
	// killed, which PostgreSQL notices within moments — before it reports
	// ErrSlotActive.
	slotBusyGrace = 3 * time.Second
)

// supervise is the stream goroutine: it runs one replication session after
// another, reconnecting with exponential backoff, until ctx ends or an error
// the user must fix.
func (c *Consumer) supervise(ctx context.Context, queue chan<- *committed) error {
	backoff := minBackoff
	started := false
	begin := time.Now()
	for attempt := 1; ; attempt++ {
		streamed, err := c.session(ctx, queue, !started)
		started = started || streamed
		c.setStreaming(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if streamed {
			backoff = minBackoff
			attempt = 1
		}
		switch {
		case errors.Is(err, ErrSlotActive) && (started || time.Since(begin) < slotBusyGrace):
			// Our own previous walsender may not have noticed the
			// disconnect yet; another process keeps it longer.
		case IsConfigError(err) && (!started || !errors.Is(err, ErrUnreachable)):
			return err
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		c.m.reconnects.Inc()
		c.mu.Lock()
		c.status.Reconnects++
		c.status.LastError = err.Error()
		c.mu.Unlock()
		if !started && errors.Is(err, ErrSlotActive) {
			// Retried briefly at first start; if the slot stays busy the
			// error is returned and said once, by the caller.
			c.log.Debug("replication slot busy; retrying", "attempt", attempt, "backoff", backoff, "error", err)
		} else {
			c.log.Warn("replication connection lost; reconnecting", "attempt", attempt, "backoff", backoff, "error", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session runs one replication session: preflight and slot checks on a
// regular connection, then streaming on a replication connection until it
// fails or ctx ends. streamed reports whether replication started.
func (c *Consumer) session(ctx context.Context, queue chan<- *committed, first bool) (streamed bool, err error) {
	conn, err := c.connect(ctx, first)
	if err != nil {
		return false, err
	}
	defer func() {
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			_ = conn.Close(closeCtx)
			cancel()
		}
	}()
	if err := ksql.Preflight(ctx, conn, c.cfg.Publication); err != nil {
		return false, fmt.Errorf("preflight: %w", err)
	}
	slot, err := c.lookupSlot(ctx, conn)
	if err != nil {
		return false, err
	}

	repl, err := c.connectReplication(ctx, first)
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		_ = repl.Close(closeCtx)
		cancel()
	}()

	start, err := c.prepareSlot(ctx, conn, repl, slot)
	if err != nil {
		return false, err
	}
	// Streaming needs only the replication connection.
	closeCtx, cancel := context.WithTimeout(ctx, ioTimeout)
	_ = conn.Close(closeCtx)
	cancel()
	conn = nil

	err = pglogrepl.StartReplication(ctx, repl, c.cfg.SlotName, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names " + quoteLiteral(quoteIdent(c.cfg.Publication)),
			"messages 'true'",
		},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" {
			return false, fmt.Errorf("%w: %s: %s", ErrSlotActive, c.cfg.SlotName, pgErr.Message)
		}
		return false, fmt.Errorf("start replication: %w", err)
	}
	// Only a start that took: a refused one (slot busy) streamed nothing.
	// Still before any transaction of this stream is decoded.
	if c.cfg.OnStream != nil {
		c.cfg.OnStream(start)
	}
	c.ack.setFloor(start)
	c.setStreaming(true)
	if first {
		c.log.Info("streaming started", "slot", c.cfg.SlotName, "publication", c.cfg.Publication, "lsn", pglogrepl.LSN(start).String())
	} else {
		c.log.Info("streaming resumed", "slot", c.cfg.SlotName, "lsn", pglogrepl.LSN(start).String())
	}
	err = c.receive(ctx, repl, queue)
	if ctx.Err() != nil {
		// Confirm what was handed off before going away, so a restart
		// redelivers as little as possible.
		finalCtx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		_ = c.sendStatus(finalCtx, repl, statusFinal)
		cancel()
	}
	return true, err
}
