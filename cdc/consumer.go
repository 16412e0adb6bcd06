package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// Sink receives each transaction that derived at least one event, in commit
// order. Deliver blocks to apply backpressure; when it returns nil the
// transaction is handed off and its position may be confirmed (subject to
// Config.Retain). An error ends [Consumer.Run] with that error.
type Sink interface {
	Deliver(ctx context.Context, tx schema.Transaction) error
}

// SinkFunc adapts a function to [Sink].
type SinkFunc func(ctx context.Context, tx schema.Transaction) error

// Deliver calls f.
func (f SinkFunc) Deliver(ctx context.Context, tx schema.Transaction) error { return f(ctx, tx) }

const (
	// queueLen bounds the decoded transactions waiting for derivation and
	// hand-off; beyond it the stream stops reading (backpressure reaches
	// PostgreSQL) but keeps sending status updates.
	queueLen = 256
	// backoff bounds between reconnection attempts.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// slotBusyGrace is how long a first start waits for a slot that is
	// still active — typically the walsender of a process that was just
	// killed, which PostgreSQL notices within moments — before it reports
	// ErrSlotActive.
	slotBusyGrace = 3 * time.Second
	// ioTimeout bounds connection setup and the final status update.
	ioTimeout = 10 * time.Second
)

// Consumer streams Koordi's committed changes from a logical replication
// slot, derives events and hands them to a [Sink]. See the package
// documentation for the guarantees.
type Consumer struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	rules   *derive.Deriver
	deriver deriver // rules, except in the stream's own tests
	ack     *acker
	running atomic.Bool
	// toastFilled counts unchanged TOASTed values the decoder took from
	// old tuples (observed by tests).
	toastFilled atomic.Int64

	// Owned by the stream goroutine.
	bootstrapped bool
	lostSlot     bool   // an invalidated slot was dropped; its sync:reset is still owed
	queuedCommit uint64 // commit LSN of the newest transaction queued for delivery
	queuedEnd    uint64 // its end LSN

	mu     sync.Mutex // leaf lock; guards status
	status Status
}

// Status is a snapshot of the consumer's progress, for readiness checks.
type Status struct {
	// Streaming is true while a replication connection is open.
	Streaming bool
	// ReceivedLSN is the newest WAL position received.
	ReceivedLSN uint64
	// ServerLSN is the server's WAL end as last reported by it.
	ServerLSN uint64
	// HandedOffLSN is the newest position handed off (or, when idle, the
	// server position everything before which is handed off).
	HandedOffLSN uint64
	// ConfirmedLSN is the flush position last sent to PostgreSQL.
	ConfirmedLSN uint64
	// CaughtUp is true when streaming and everything the server has
	// reported was handed off.
	CaughtUp bool
	// Reconnects counts replication connections lost.
	Reconnects int
	// LastError is the error that ended the last connection, if any.
	LastError string
}

// New validates cfg and returns a consumer. It does not connect; Run does.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	rules := derive.New(derive.Config{Logger: cfg.Logger, Registerer: cfg.Registerer})
	return &Consumer{
		cfg:     cfg,
		log:     cfg.Logger,
		m:       newMetrics(cfg.Registerer),
		rules:   rules,
		deriver: rules,
		ack:     newAcker(cfg.Retain),
	}, nil
}

// Status returns a snapshot of the consumer's progress.
func (c *Consumer) Status() Status {
	c.mu.Lock()
	s := c.status
	c.mu.Unlock()
	s.HandedOffLSN, _ = c.ack.handedOff()
	s.CaughtUp = s.Streaming && s.ServerLSN > 0 && s.HandedOffLSN >= s.ServerLSN
	return s
}

// Run streams until ctx is cancelled (then it returns nil) or an error the
// user must fix ([IsConfigError]) or a Sink error occurs. Lost connections
// and PostgreSQL restarts are retried with backoff. Run may be called again
// after it returned, not concurrently; it then resumes after the last
// transaction handed off (one that failed in Deliver is derived again).
func (c *Consumer) Run(ctx context.Context, sink Sink) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("cdc: Run is already running")
	}
	defer c.running.Store(false)
	if sink == nil {
		return errors.New("cdc: Run needs a Sink")
	}
	// Transactions queued by an earlier Run but not handed off must be
	// derived again: resume the in-process skip from the last hand-off.
	c.queuedEnd, c.queuedCommit = c.ack.handedOff()
	queue := make(chan *committed, queueLen)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.deliver(gctx, sink, queue) })
	g.Go(func() error { return c.stream(gctx, queue) })
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// deliver is the delivery goroutine: it derives each queued transaction
// (the deriver is only ever used here after bootstrap) and hands its events
// to the sink.
func (c *Consumer) deliver(ctx context.Context, sink Sink, queue <-chan *committed) error {
	for {
		var item *committed
		select {
		case <-ctx.Done():
			return ctx.Err()
		case item = <-queue:
		}
		events := c.deriver.Derive(item.tx)
		if len(events) > 0 {
			tx := schema.Transaction{CommitLSN: item.tx.CommitLSN, CommitTime: item.tx.CommitTime, Events: events}
			if err := sink.Deliver(ctx, tx); err != nil {
				return fmt.Errorf("deliver transaction %s: %w", pglogrepl.LSN(item.tx.CommitLSN), err)
			}
		}
		now := time.Now()
		c.ack.handOff(item.end, item.tx.CommitLSN, now)
		c.m.lagSeconds.Set(max(0, now.Sub(item.tx.CommitTime).Seconds()))
		c.updateLag() // the gauges agree with Status().CaughtUp at once, not at the next keepalive
	}
}

// stream is the stream goroutine: it owns the connections and reconnects
// with exponential backoff.
func (c *Consumer) stream(ctx context.Context, queue chan<- *committed) error {
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

// session runs one replication connection from setup to its end. streamed
// reports whether replication started.
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

	var start uint64
	if !slot.exists {
		recreated := c.bootstrapped // it vanished while this process streamed
		if slot.lost {
			// Kept until the new slot exists: a failed creation drops the
			// new slot too, and the next attempt finds none, lost or not.
			c.lostSlot = true
		}
		if start, err = c.createSlot(ctx, conn, repl); err != nil {
			return false, err
		}
		// Everything decoded before the gap has been handed off (createSlot
		// drained the queue) and nothing after it is queued yet.
		switch {
		case c.lostSlot:
			c.lostSlot = false
			c.reset("slot_invalidated")
		case recreated:
			c.log.Warn("replication slot disappeared while streaming; created it again, changes in between are lost", "slot", c.cfg.SlotName)
			c.reset("slot_recreated")
		}
	} else {
		start = slot.confirmed
		if !c.bootstrapped {
			if err := c.deriver.Bootstrap(ctx, conn); err != nil {
				return false, fmt.Errorf("bootstrap names state: %w", err)
			}
			c.bootstrapped = true
		}
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
		_ = c.sendStatus(finalCtx, repl, false, false)
		cancel()
	}
	return true, err
}

// receive reads the replication stream until it fails or ctx ends.
func (c *Consumer) receive(ctx context.Context, repl *pgconn.PgConn, queue chan<- *committed) error {
	dec := newDecoder()
	skipped, toast := 0, 0
	next := time.Now().Add(c.cfg.StatusInterval)
	if err := c.sendStatus(ctx, repl, true, false); err != nil {
		return err
	}
	// One receive context per status period, not per message: creating
	// and cancelling a deadline context for every WAL message cost up to a
	// fifth of the stream goroutine's time during catch-up.
	var recv deadlineContext
	defer recv.stop()
	for {
		if !time.Now().Before(next) {
			if err := c.sendStatus(ctx, repl, true, false); err != nil {
				return err
			}
			next = time.Now().Add(c.cfg.StatusInterval)
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
			if ka.ReplyRequested {
				// PostgreSQL asks for a reply when it has not heard from
				// us for wal_sender_timeout/2 — never, with status
				// updates every StatusInterval — and, in a loop, while
				// it shuts down: then the walsender exits only once the
				// flush position reaches everything it sent. A position
				// trailing by Retain would hold a fast shutdown until
				// wal_sender_timeout, so the reply confirms everything
				// handed off (never more). The replay window in this
				// process is unaffected; only a restart of this process
				// right after would decode less again.
				if err := c.sendStatus(ctx, repl, false, true); err != nil {
					return err
				}
				next = time.Now().Add(c.cfg.StatusInterval)
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
			if d := dec.toastFilled - toast; d > 0 {
				c.toastFilled.Add(int64(d))
				toast = dec.toastFilled
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
func (c *Consumer) enqueue(ctx context.Context, repl *pgconn.PgConn, queue chan<- *committed, item *committed, next *time.Time) error {
	for {
		timer := time.NewTimer(time.Until(*next))
		select {
		case queue <- item:
			timer.Stop()
			c.queuedCommit, c.queuedEnd = item.tx.CommitLSN, item.end
			return nil
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
			if err := c.sendStatus(ctx, repl, true, false); err != nil {
				return err
			}
			*next = time.Now().Add(c.cfg.StatusInterval)
		}
	}
}

// sendStatus confirms the safe position: write, flush and apply are all set
// to it explicitly, because pglogrepl fills zero fields with the write
// position and PostgreSQL treats the flush position as confirmed.
// requestReply asks the server for a keepalive at once, which carries its
// current position: an idle stream learns it is caught up within one
// status interval instead of wal_sender_timeout/2. untrailed confirms
// everything handed off, ignoring Retain.
func (c *Consumer) sendStatus(ctx context.Context, repl *pgconn.PgConn, requestReply, untrailed bool) error {
	safe := c.ack.safe(time.Now())
	if untrailed {
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
		ReplyRequested:   requestReply,
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

func (c *Consumer) setStreaming(on bool) {
	c.mu.Lock()
	c.status.Streaming = on
	c.mu.Unlock()
}

// connect opens the regular connection used for preflight, slot checks and
// bootstrap.
func (c *Consumer) connect(ctx context.Context, first bool) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	stabilise(cfg.Config.RuntimeParams)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ioTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if first && ctx.Err() == nil {
			return nil, fmt.Errorf("%w at %s:%d/%s: %v", ErrUnreachable, cfg.Host, cfg.Port, cfg.Database, err)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// connectReplication opens the walsender connection.
func (c *Consumer) connectReplication(ctx context.Context, first bool) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(c.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	stabilise(cfg.RuntimeParams)
	cfg.RuntimeParams["replication"] = "database"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ioTimeout
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if first && ctx.Err() == nil {
			return nil, fmt.Errorf("%w (replication connection) at %s:%d/%s: %v", ErrUnreachable, cfg.Host, cfg.Port, cfg.Database, err)
		}
		return nil, fmt.Errorf("connect for replication: %w", err)
	}
	return conn, nil
}

// stabilise makes values arrive in one text form whatever the server's
// defaults: timestamps in UTC, ISO dates.
func stabilise(params map[string]string) {
	params["TimeZone"] = "UTC"
	params["DateStyle"] = "ISO"
	if params["application_name"] == "" {
		params["application_name"] = "koordi-realtime"
	}
}

type slotInfo struct {
	exists    bool
	confirmed uint64
	lost      bool // it existed but was invalidated, and was dropped
}

// lookupSlot checks the configured slot: usable, in use elsewhere, or
// missing (also when it was invalidated, in which case it is dropped so it
// can be created again).
func (c *Consumer) lookupSlot(ctx context.Context, conn *pgx.Conn) (slotInfo, error) {
	var (
		plugin, slotType, walStatus, confirmed *string
		sameDB                                 *bool
		activePID                              *int32
	)
	err := conn.QueryRow(ctx, `
		SELECT plugin, slot_type, database = current_database(), active_pid,
		       confirmed_flush_lsn::text, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.SlotName).
		Scan(&plugin, &slotType, &sameDB, &activePID, &confirmed, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotInfo{}, nil
	}
	if err != nil {
		return slotInfo{}, fmt.Errorf("look up replication slot: %w", err)
	}
	if slotType == nil || *slotType != "logical" || plugin == nil || *plugin != "pgoutput" || sameDB == nil || !*sameDB {
		return slotInfo{}, fmt.Errorf("%w: slot %q is not a pgoutput slot of this database: choose another SLOT_NAME or drop it (SELECT pg_drop_replication_slot('%s'))",
			ErrSlotConflict, c.cfg.SlotName, c.cfg.SlotName)
	}
	if activePID != nil {
		return slotInfo{}, fmt.Errorf("%w: slot %q is streaming to backend pid %d: stop the other koordi-realtime (or use another SLOT_NAME)",
			ErrSlotActive, c.cfg.SlotName, *activePID)
	}
	if walStatus != nil && *walStatus == "lost" {
		c.log.Warn("replication slot was invalidated (WAL removed); recreating it, changes since it was last read are lost", "slot", c.cfg.SlotName)
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, c.cfg.SlotName); err != nil {
			return slotInfo{}, fmt.Errorf("drop invalidated slot: %w", err)
		}
		return slotInfo{lost: true}, nil
	}
	if confirmed == nil {
		return slotInfo{}, fmt.Errorf("%w: slot %q has no confirmed position", ErrSlotConflict, c.cfg.SlotName)
	}
	lsn, err := pglogrepl.ParseLSN(*confirmed)
	if err != nil {
		return slotInfo{}, fmt.Errorf("slot %q: %w", c.cfg.SlotName, err)
	}
	return slotInfo{exists: true, confirmed: uint64(lsn)}, nil
}

// createSlot creates the permanent slot and bootstraps the names state in
// the snapshot it exports, so the state is exactly as of the slot's
// consistent point and the stream continues from there.
func (c *Consumer) createSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) (uint64, error) {
	if c.bootstrapped {
		// The slot vanished while this process was streaming (dropped or
		// invalidated). The new state must not race the deriver: let the
		// delivery goroutine finish what is queued first.
		if err := c.drain(ctx); err != nil {
			return 0, err
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, c.cfg.SlotName, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "EXPORT_SNAPSHOT",
	})
	if err != nil {
		return 0, fmt.Errorf("create replication slot %s: %w", c.cfg.SlotName, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("create replication slot %s: consistent point: %w", c.cfg.SlotName, err)
	}
	if err := c.bootstrapAt(ctx, conn, res.SnapshotName); err != nil {
		// A new slot that the state does not match is worse than none:
		// drop it, so the next attempt creates it with a fresh snapshot.
		dropCtx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if derr := pglogrepl.DropReplicationSlot(dropCtx, repl, c.cfg.SlotName, pglogrepl.DropReplicationSlotOptions{}); derr != nil {
			c.log.Warn("could not drop the slot whose bootstrap failed", "slot", c.cfg.SlotName, "error", derr)
		}
		return 0, err
	}
	c.bootstrapped = true
	c.log.Info("replication slot created", "slot", c.cfg.SlotName, "lsn", res.ConsistentPoint)
	return uint64(lsn), nil
}

// bootstrapAt loads the names state in the exported snapshot.
func (c *Consumer) bootstrapAt(ctx context.Context, conn *pgx.Conn, snapshot string) error {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("bootstrap: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot)); err != nil {
		return fmt.Errorf("bootstrap: use the slot's snapshot: %w", err)
	}
	if err := c.deriver.Bootstrap(ctx, tx); err != nil {
		return fmt.Errorf("bootstrap names state: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("bootstrap: commit: %w", err)
	}
	return nil
}

// reset reports a gap in the stream to Config.OnReset.
func (c *Consumer) reset(reason string) {
	if c.cfg.OnReset != nil {
		c.cfg.OnReset(reason)
	}
}

// drain waits until everything queued has been handed off.
func (c *Consumer) drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if handed, _ := c.ack.handedOff(); handed >= c.queuedEnd {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func quoteLiteral(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

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
