package cdc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
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
	// healthyAfter is how long a session must stream before its end resets
	// the backoff: one that fails at once again and again (a publication
	// missing, a broken table) must not be retried every 100 ms.
	healthyAfter = 10 * time.Second
)

// supervise is the stream goroutine: it runs one replication session after
// another, reconnecting with exponential backoff, until ctx ends or an error
// the user must fix.
func (c *Consumer) supervise(ctx context.Context, queue chan<- *committed) error {
	backoff := minBackoff
	started := false
	begin := time.Now()
	lastErr := ""
	for attempt := 1; ; attempt++ {
		sessionStart := time.Now()
		sctx, cancel := context.WithCancelCause(ctx)
		c.mu.Lock()
		c.cancelSession = cancel
		c.mu.Unlock()
		streamed, err := c.session(sctx, queue, !started)
		c.mu.Lock()
		c.cancelSession = nil
		c.mu.Unlock()
		if errors.Is(err, errStandby) {
			cancel(nil)
			c.setStreaming(false)
			c.standBy()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(c.cfg.StandbyRetry):
			}
			attempt = 0
			continue
		}
		if c.leading {
			// The lock went with the session: another node may stream
			// now, so this term is over (a new consumer starts the next,
			// with a fresh state).
			cancel(nil)
			c.setStreaming(false)
			c.leading = false
			if c.cfg.OnLeading != nil {
				c.cfg.OnLeading(false)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn("lost leadership", "slot", c.cfg.SlotName, "error", err)
			return fmt.Errorf("%w: %v", ErrLostLeadership, err)
		}
		cancel(nil)
		started = started || streamed
		c.setStreaming(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if streamed && time.Since(sessionStart) >= healthyAfter {
			backoff = minBackoff
			attempt = 1
		}
		// What the user must fix ends Run only before the first stream: a
		// running service keeps its sockets and retries (with backoff, and
		// loudly) whatever an operator broke meanwhile, until it is mended.
		if !started {
			switch {
			case errors.Is(err, ErrSlotActive) && time.Since(begin) < slotBusyGrace:
				// Our own previous walsender may not have noticed the
				// disconnect yet.
			case IsConfigError(err):
				return err
			}
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		c.m.reconnects.Inc()
		c.mu.Lock()
		c.status.Reconnects++
		c.status.LastError = err.Error()
		c.mu.Unlock()
		switch {
		case !started && errors.Is(err, ErrSlotActive):
			// Retried briefly at first start; if the slot stays busy the
			// error is returned and said once, by the caller.
			c.log.Debug("replication slot busy; retrying", "attempt", attempt, "backoff", backoff, "error", err)
		case IsConfigError(err) && err.Error() != lastErr:
			c.log.Error("replication cannot stream until this is fixed; retrying", "backoff", backoff, "error", err)
		case IsConfigError(err):
			c.log.Debug("replication still cannot stream; retrying", "attempt", attempt, "backoff", backoff, "error", err)
		default:
			c.log.Warn("replication connection lost; reconnecting", "attempt", attempt, "backoff", backoff, "error", err)
		}
		lastErr = err.Error()
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
	// A first start refuses a database that is not set up; later sessions
	// stream what they can, and the checker says what is wrong.
	preflight := ksql.PreflightStream
	if first {
		preflight = ksql.Preflight
	}
	if err := preflight(ctx, conn, c.cfg.Publication); err != nil {
		return false, fmt.Errorf("preflight: %w", err)
	}
	if first {
		// Catch-up target: every transaction committed before this process
		// started. The walsender's first reports are no help: in logical
		// replication they say how far decoding has got, not where WAL ends.
		if err := c.readTarget(ctx, conn); err != nil {
			return false, err
		}
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
	if c.cfg.LockKey != 0 {
		// The lock lives in the replication session: it is held exactly as
		// long as this connection streams, and PostgreSQL frees it the
		// moment the session ends, however this process dies. A standby
		// waits on that connection alone (the regular one was for the
		// checks above, which stay in front so a database that is not set
		// up is reported by every node, not only by the one that leads);
		// the slot is looked up on a fresh one once the lock is held.
		closeCtx, cancel := context.WithTimeout(ctx, ioTimeout)
		_ = conn.Close(closeCtx)
		cancel()
		conn = nil
		if err := c.waitLead(ctx, repl); err != nil {
			return false, err
		}
		if conn, err = c.connect(ctx, first); err != nil {
			return false, err
		}
	}
	slot, err := c.lookupSlot(ctx, conn)
	if err != nil {
		return false, err
	}

	if c.statusEvery, err = c.statusInterval(ctx, repl); err != nil {
		return false, err
	}
	start, err := c.prepareSlot(ctx, conn, repl, slot, first)
	if err != nil {
		return false, err
	}
	schemas, err := ksql.WatchedSchemas(ctx, conn)
	if err != nil {
		return false, err
	}
	// Streaming needs only the replication connection.
	closeCtx, cancel := context.WithTimeout(ctx, ioTimeout)
	_ = conn.Close(closeCtx)
	cancel()
	conn = nil

	args := []string{
		"proto_version '1'",
		"publication_names " + quoteLiteral(quoteIdent(c.cfg.Publication)),
	}
	if len(c.cfg.GapKey) > 0 {
		// Logical decoding messages carry nothing but gap records
		// (RecordGap), kept only where a key verifies them. Any role may
		// write one, of up to a gigabyte, which the stream reads whole
		// into memory before it can skip it: without a key, pgoutput is
		// told to leave them out.
		args = append(args, "messages 'true'")
	}
	err = pglogrepl.StartReplication(ctx, repl, c.cfg.SlotName, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: args,
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
	c.requestCheck()
	// "started" only for a slot created now; a process restarted on its
	// slot, as a reconnect, resumes from where the slot was confirmed.
	if first && !slot.exists {
		c.log.Info("streaming started", "slot", c.cfg.SlotName, "publication", c.cfg.Publication, "lsn", pglogrepl.LSN(start).String())
	} else {
		c.log.Info("streaming resumed", "slot", c.cfg.SlotName, "publication", c.cfg.Publication, "lsn", pglogrepl.LSN(start).String())
	}
	err = c.receive(ctx, repl, queue, schemas)
	if isPublicationMissing(err) {
		// PostgreSQL looks the publication up as of each change's position,
		// so one dropped and created again (DROP PUBLICATION, then setup) is
		// missing for every change before its re-creation, forever: this
		// slot can never stream past the gap. When it exists now, the slot is
		// created again after the gap, with a fresh state and sync:reset.
		c.publicationGap(ctx, err)
	}
	if ctx.Err() != nil {
		// Confirm what was handed off before going away, so a restart
		// redelivers as little as possible.
		finalCtx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		_ = c.sendStatus(finalCtx, repl, statusFinal)
		cancel()
	}
	return true, err
}

// readTarget reads the server's WAL position into the catch-up target.
func (c *Consumer) readTarget(ctx context.Context, conn *pgx.Conn) error {
	var text string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		return fmt.Errorf("read the WAL position: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return fmt.Errorf("read the WAL position: %w", err)
	}
	c.setTarget(uint64(lsn))
	return nil
}

// statusInterval is Config.StatusInterval, capped at a quarter of the
// session's wal_sender_timeout (read on the replication connection, whose
// value the walsender uses: it can be set per role, database or connection).
// PostgreSQL asks for a reply when it has not heard from us for half the
// timeout, and replies confirm everything handed off, past the replay
// window: a status update every quarter keeps it from ever asking.
func (c *Consumer) statusInterval(ctx context.Context, repl *pgconn.PgConn) (time.Duration, error) {
	rows, err := repl.Exec(ctx, "SHOW wal_sender_timeout").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	if len(rows) != 1 || len(rows[0].Rows) != 1 || len(rows[0].Rows[0]) != 1 {
		return 0, errors.New("read wal_sender_timeout: unexpected answer")
	}
	timeout, err := parsePGDuration(string(rows[0].Rows[0][0]))
	if err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	every := c.cfg.StatusInterval
	if timeout > 0 && every > timeout/4 {
		every = timeout / 4
		c.log.Info("status interval shortened to a quarter of wal_sender_timeout", "wal_sender_timeout", timeout, "interval", every)
	}
	return every, nil
}

// parsePGDuration reads a time setting as SHOW prints it: a number with a
// unit (ms, s, min, h, d), or a bare number of milliseconds; 0 disables.
func parsePGDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a duration: %q", s)
	}
	units := map[string]time.Duration{"": time.Millisecond, "ms": time.Millisecond, "s": time.Second,
		"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	u, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("not a duration: %q", s)
	}
	return time.Duration(n) * u, nil
}

// isPublicationMissing tells the error pgoutput raises when the publication
// does not exist as of a change's position.
func isPublicationMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42704" && strings.HasPrefix(pgErr.Message, "publication ")
}

// publicationGap handles a publication missing as of the stream's position:
// if it exists now, it was dropped and created again, and the slot is
// dropped so that the next session creates it after the gap (see
// prepareSlot); if not, the next session's preflight reports it, with
// backoff, until setup creates it.
func (c *Consumer) publicationGap(ctx context.Context, cause error) {
	conn, err := c.connect(ctx, false)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, c.cfg.Publication).Scan(&exists); err != nil || !exists {
		return
	}
	// The walsender that raised the error may still hold the slot for a
	// moment after the connection ends.
	for range 50 {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, c.cfg.SlotName)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.log.Error("publication was dropped and created again, and the slot could not be dropped to stream past the gap", "slot", c.cfg.SlotName, "error", err)
		return
	}
	c.pubGap = true
	c.log.Warn("publication was dropped and created again: changes in between are lost; recreating the slot after the gap",
		"publication", c.cfg.Publication, "slot", c.cfg.SlotName, "cause", cause)
}

// standBy says once that another node streams from the slot.
func (c *Consumer) standBy() {
	if c.standing {
		return
	}
	c.standing = true
	c.log.Info("standing by: another node streams from the slot", "slot", c.cfg.SlotName)
	if c.cfg.OnLeading != nil {
		c.cfg.OnLeading(false)
	}
}

// standbySession bounds how long one session keeps trying the leader lock
// on its connections: a standby asks again every StandbyRetry on the same
// replication connection (a new session every time would start two
// PostgreSQL backends a try), and starts a fresh session now and then so
// its preflight and slot checks are not stale when it takes over.
const standbySession = time.Minute

// waitLead takes the leader lock on the replication connection, trying again
// every StandbyRetry while another session holds it, and reports errStandby
// after standbySession without it.
func (c *Consumer) waitLead(ctx context.Context, repl *pgconn.PgConn) error {
	deadline := time.Now().Add(standbySession)
	for {
		err := c.lead(ctx, repl)
		if !errors.Is(err, errStandby) || time.Now().After(deadline) {
			return err
		}
		c.standBy()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.cfg.StandbyRetry):
		}
	}
}

// lead takes the leader lock on the replication connection, or reports
// errStandby when another session holds it.
func (c *Consumer) lead(ctx context.Context, repl *pgconn.PgConn) error {
	rows, err := repl.Exec(ctx, fmt.Sprintf("SELECT pg_try_advisory_lock(%d)", c.cfg.LockKey)).ReadAll()
	if err != nil {
		return fmt.Errorf("take the leader lock: %w", err)
	}
	if len(rows) != 1 || len(rows[0].Rows) != 1 || len(rows[0].Rows[0]) != 1 {
		return errors.New("take the leader lock: unexpected answer")
	}
	if string(rows[0].Rows[0][0]) != "t" {
		return errStandby
	}
	if !c.leading {
		c.leading = true
		c.log.Info("became leader", "slot", c.cfg.SlotName)
		if c.cfg.OnLeading != nil {
			c.cfg.OnLeading(true)
		}
	}
	return nil
}
