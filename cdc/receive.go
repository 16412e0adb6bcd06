package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// statusKind is why a standby status update is sent; each kind confirms a
// different position (see sendStatus).
type statusKind uint8

const (
	// statusPeriodic runs every StatusInterval: it confirms the trailing
	// position and asks for a keepalive, which carries the server's current
	// position, so an idle stream learns it is caught up within one interval
	// instead of wal_sender_timeout/2.
	statusPeriodic statusKind = iota + 1
	// statusReply answers PostgreSQL's request for a reply. It asks for one
	// when it has not heard from us for wal_sender_timeout/2 — never, with
	// status updates every StatusInterval — and, in a loop, while it shuts
	// down: then the walsender exits only once the flush position reaches
	// everything it sent. A position trailing by Retain would hold a fast
	// shutdown until wal_sender_timeout, so the reply confirms everything
	// handed off (never more). The replay window in this process is
	// unaffected; only a restart of this process right after would decode
	// less again.
	statusReply
	// statusFinal is the last update before the consumer goes away: the
	// trailing position, no keepalive wanted.
	statusFinal
)

// receive reads the replication stream until it fails or ctx ends.
func (c *Consumer) receive(ctx context.Context, repl *pgconn.PgConn, queue chan<- *committed, schemas map[string]string) error {
	dec := newDecoder(c.cfg.SpillBytes, c.cfg.SpillDir)
	dec.gapKey, dec.slot, dec.schemas = c.cfg.GapKey, c.cfg.SlotName, schemas
	defer dec.release()
	skipped, forged := 0, 0
	next := time.Now().Add(c.statusEvery)
	if err := c.sendStatus(ctx, repl, statusPeriodic); err != nil {
		return err
	}
	// One receive context per status period, not per message: creating
	// and cancelling a deadline context for every WAL message cost up to a
	// fifth of the stream goroutine's time during catch-up.
	var recv deadlineContext
	defer recv.stop()
	for {
		if !time.Now().Before(next) {
			if err := c.sendStatus(ctx, repl, statusPeriodic); err != nil {
				return err
			}
			next = time.Now().Add(c.statusEvery)
		}
		rctx := recv.until(ctx, next)
		raw, err := repl.ReceiveMessage(rctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		var data []byte
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			data = msg.Data
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("replication: server ended the stream")
		default:
			continue
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
			if err != nil {
				return fmt.Errorf("keepalive: %w", err)
			}
			if !dec.inTx() {
				c.ack.idle(c.queuedEnd, uint64(ka.ServerWALEnd), time.Now())
			}
			c.observe(0, uint64(ka.ServerWALEnd))
			c.updateLag() // per keepalive and per hand-off, not per WAL message
			c.checkCaughtUp()
			if ka.ReplyRequested {
				if err := c.sendStatus(ctx, repl, statusReply); err != nil {
					return err
				}
				next = time.Now().Add(c.statusEvery)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fmt.Errorf("xlogdata: %w", err)
			}
			c.observe(uint64(xld.WALStart), uint64(xld.ServerWALEnd))
			done, err := dec.decode(xld.WALData)
			if err != nil {
				return fmt.Errorf("decode at %s: %w", xld.WALStart, err)
			}
			if d := dec.skipped - skipped; d > 0 {
				c.m.skipped.Add(float64(d))
				skipped = dec.skipped
			}
			if dec.forgedGaps > forged {
				forged = dec.forgedGaps
				// Every role may write one: the 1st, 10th, 100th… of a
				// session are logged, not each.
				if isPowerOf10(forged) {
					c.log.Warn("ignored gap records that do not verify: written by a role without the service's key, in another transaction than signed, or by a service on another slot",
						"lsn", xld.WALStart.String(), "ignored_this_session", forged)
				}
			}
			if done == nil {
				continue
			}
			c.m.transactions.Inc()
			if done.tx.CommitLSN <= c.queuedCommit {
				continue // queued before a reconnect; derive each transaction once
			}
			if err := c.enqueue(ctx, repl, queue, done, &next); err != nil {
				return err
			}
		}
	}
}

// enqueue hands a transaction to the delivery goroutine, sending status
// updates while it waits so PostgreSQL does not time the connection out.
// It waits first for the queue's byte budget (queueBudget).
func (c *Consumer) enqueue(ctx context.Context, repl *pgconn.PgConn, queue chan<- *committed, item *committed, next *time.Time) error {
	item.bytes = item.tx.MemBytes()
	budgeted := false
	for {
		timer := time.NewTimer(time.Until(*next))
		if !budgeted {
			budgeted = c.budget.take(item.bytes)
		}
		// A nil channel blocks: until the budget has room, only a release
		// (freed), the status timer or the end of ctx wake this loop.
		var q chan<- *committed
		if budgeted {
			q = queue
		}
		select {
		case q <- item:
			timer.Stop()
			c.queuedCommit, c.queuedEnd = item.tx.CommitLSN, item.end
			return nil
		case <-c.budget.freed:
			timer.Stop()
			continue
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
			if err := c.sendStatus(ctx, repl, statusPeriodic); err != nil {
				return err
			}
			*next = time.Now().Add(c.statusEvery)
		}
	}
}

// sendStatus confirms the position kind calls for: the trailing safe
// position, or (statusReply) everything handed off. Write, flush and apply
// are all set to it explicitly, because pglogrepl fills zero fields with the
// write position and PostgreSQL treats the flush position as confirmed —
// never what was merely received.
func (c *Consumer) sendStatus(ctx context.Context, repl *pgconn.PgConn, kind statusKind) error {
	safe := c.ack.safe(time.Now())
	if kind == statusReply {
		safe = c.ack.untrailed()
	}
	if safe == 0 {
		return nil
	}
	lsn := pglogrepl.LSN(safe)
	err := pglogrepl.SendStandbyStatusUpdate(ctx, repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
		ClientTime:       time.Now(),
		ReplyRequested:   kind == statusPeriodic,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	// PostgreSQL never moves a slot's confirmed position back, so a
	// trailing update after an untrailed one changes nothing there.
	c.mu.Lock()
	c.status.ConfirmedLSN = max(c.status.ConfirmedLSN, safe)
	confirmed := c.status.ConfirmedLSN
	c.mu.Unlock()
	c.m.confirmedLSN.Set(float64(confirmed))
	return nil
}

// observe records positions the server reported; it runs for every WAL
// message, so the lag gauges are left to updateLag.
func (c *Consumer) observe(received, server uint64) {
	c.mu.Lock()
	c.status.ReceivedLSN = max(c.status.ReceivedLSN, received)
	c.status.ServerLSN = max(c.status.ServerLSN, server)
	rec := c.status.ReceivedLSN
	c.mu.Unlock()
	c.m.receivedLSN.Set(float64(rec))
}

// updateLag sets the lag gauges from the server's last reported position and
// the newest hand-off.
func (c *Consumer) updateLag() {
	handed, _ := c.ack.handedOff()
	c.mu.Lock()
	lag := uint64(0)
	if c.status.ServerLSN > handed {
		lag = c.status.ServerLSN - handed
	}
	c.mu.Unlock()
	c.m.lagBytes.Set(float64(lag))
	if lag == 0 {
		c.m.lagSeconds.Set(0)
	}
}

// deadlineContext reuses one deadline context until the deadline changes.
type deadlineContext struct {
	ctx    context.Context
	cancel context.CancelFunc
	due    time.Time
}

func (d *deadlineContext) until(parent context.Context, due time.Time) context.Context {
	if d.ctx == nil || !d.due.Equal(due) {
		d.stop()
		d.ctx, d.cancel = context.WithDeadline(parent, due)
		d.due = due
	}
	return d.ctx
}

func (d *deadlineContext) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

func isPowerOf10(n int) bool {
	for n >= 10 && n%10 == 0 {
		n /= 10
	}
	return n == 1
}
