package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
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
	deriver deriver
	ack     *acker
	running atomic.Bool

	// Owned by the stream goroutine.
	bootstrapped bool
	lostSlot     bool          // an invalidated slot was dropped; its sync:reset is still owed
	pubGap       bool          // the slot was dropped to stream past a re-created publication
	statusEvery  time.Duration // this session's status interval (see statusInterval)
	queuedCommit uint64        // commit LSN of the newest transaction queued for delivery
	queuedEnd    uint64        // its end LSN

	caughtUp     chan struct{} // closed once the first catch-up target is handed off
	caughtUpOnce sync.Once
	checkNow     chan struct{} // asks the checker goroutine for a check

	mu            sync.Mutex // leaf lock; guards what follows
	status        Status
	target        uint64                  // the catch-up target; 0 until the first session read it
	problems      []ksql.TableProblem     // the checker's last findings
	resync        bool                    // a table's changes were lost: the next session brings the state up to date
	cancelSession context.CancelCauseFunc // ends the current session (nil between sessions)
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
	// Problems says, one line each, what keeps a watched table from being
	// streamed fully (not in the publication, replica identity not FULL),
	// as the last check found.
	Problems []string
	// LastError is the error that ended the last connection, if any.
	LastError string
}

// New validates cfg and returns a consumer. It does not connect; Run does.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	return newConsumer(cfg, derive.New(derive.Config{Logger: cfg.Logger, Registerer: cfg.Registerer, BulkEvents: cfg.BulkEvents})), nil
}

// newConsumer builds a consumer around d: the derivation rules, or in the
// stream's own tests a recorder of what was decoded. cfg is filled.
func newConsumer(cfg Config, d deriver) *Consumer {
	return &Consumer{
		cfg:      cfg,
		log:      cfg.Logger,
		m:        newMetrics(cfg.Registerer),
		deriver:  d,
		ack:      newAcker(cfg.Retain),
		caughtUp: make(chan struct{}),
		checkNow: make(chan struct{}, 1),
	}
}

// Status returns a snapshot of the consumer's progress.
func (c *Consumer) Status() Status {
	c.mu.Lock()
	s := c.status
	s.Problems = slices.Clone(s.Problems)
	c.mu.Unlock()
	s.HandedOffLSN, _ = c.ack.handedOff()
	s.CaughtUp = s.Streaming && s.ServerLSN > 0 && s.HandedOffLSN >= s.ServerLSN
	return s
}

// CaughtUp is closed once the consumer, streaming for the first time in this
// process, has handed off everything up to the server's WAL position read
// when it started (pg_current_wal_lsn()), that is every transaction
// committed before the process started.
// Until then it decodes again what a previous process already delivered (the
// replay window) and any backlog: serve keeps sockets out until then, so none
// joins rooms from stale state or gets old events as if they had just
// happened. It stays closed across later reconnects.
func (c *Consumer) CaughtUp() <-chan struct{} { return c.caughtUp }

// setTarget records the first catch-up target the stream reports.
func (c *Consumer) setTarget(lsn uint64) {
	c.mu.Lock()
	if c.target == 0 {
		c.target = lsn
	}
	c.mu.Unlock()
	c.checkCaughtUp()
}

// checkCaughtUp closes CaughtUp once the target is handed off; it runs after
// every hand-off.
func (c *Consumer) checkCaughtUp() {
	c.mu.Lock()
	target, streaming := c.target, c.status.Streaming
	c.mu.Unlock()
	if target == 0 || !streaming {
		return
	}
	if handed, _ := c.ack.handedOff(); handed >= target {
		c.caughtUpOnce.Do(func() {
			c.log.Debug("caught up", "lsn", pglogrepl.LSN(target).String())
			close(c.caughtUp)
		})
	}
}

// State is the live membership view of the derivation state, safe for
// concurrent readers.
func (c *Consumer) State() *derive.State { return c.deriver.State() }

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
	g.Go(func() error { return c.supervise(gctx, queue) })
	g.Go(func() error { return c.watchTables(gctx) })
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
		tx := c.deriver.Derive(item.tx)
		err := item.tx.Err()
		item.tx.Release()
		if err != nil {
			return fmt.Errorf("derive transaction %s: %w", pglogrepl.LSN(item.tx.CommitLSN), err)
		}
		if len(tx.Events) > 0 {
			if err := sink.Deliver(ctx, tx); err != nil {
				return fmt.Errorf("deliver transaction %s: %w", pglogrepl.LSN(item.tx.CommitLSN), err)
			}
		}
		now := time.Now()
		c.ack.handOff(item.end, item.tx.CommitLSN, now)
		c.m.lagSeconds.Set(max(0, now.Sub(item.tx.CommitTime).Seconds()))
		c.updateLag() // the gauges agree with Status().CaughtUp at once, not at the next keepalive
		c.checkCaughtUp()
	}
}

// reset reports a gap in the stream to Config.OnReset.
func (c *Consumer) reset(reason string) {
	if c.cfg.OnReset != nil {
		c.cfg.OnReset(reason)
	}
}

func (c *Consumer) setStreaming(on bool) {
	c.mu.Lock()
	c.status.Streaming = on
	c.mu.Unlock()
}
