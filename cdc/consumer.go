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

// MaxBatch is the most transactions one BatchSink.DeliverBatch carries:
// enough to visit each socket once for many transactions of a backlog.
const MaxBatch = 64

// AsyncSink is a Sink whose hand-off completes later, such as a publish to
// JetStream that is acknowledged afterwards. DeliverAsync accepts the
// transaction — blocking only to bound what is in flight — and calls done
// once it is durably handed off, from any goroutine; the consumer confirms a
// position only past transactions whose done was called, together with every
// one before. An error ends Run, as from Deliver. When the sink implements
// AsyncSink, Run uses DeliverAsync and never calls Deliver.
type AsyncSink interface {
	Sink
	DeliverAsync(ctx context.Context, tx schema.Transaction, done func()) error
}

// BatchSink is a Sink that can take several transactions in one call, in
// commit order, such as a gateway that queues each socket's frames of the
// whole batch at once. When the stream is ahead of the sink (a backlog after
// a restart, a burst of commits), Run hands over with DeliverBatch the
// transactions already decoded and queued, up to MaxBatch of them; it never
// waits for one to form, so a transaction that finds none behind it goes
// alone. DeliverBatch returning nil hands off every one of them. An
// AsyncSink is given transactions one at a time.
type BatchSink interface {
	Sink
	DeliverBatch(ctx context.Context, txs []schema.Transaction) error
}

// BacklogSink is a BatchSink told whether the stream is behind it: with
// behind set, more transactions are already decoded after txs and follow
// in the next call at once, so the sink may hold what it would hand on
// for them together (a gateway then visits each socket once for many
// batches of a backlog). A batch with behind unset is the newest the
// stream has: the sink hands everything on before it returns. When what
// followed a batch told behind derives no events, a call with no
// transactions and behind unset ends the hold. When the sink implements
// BacklogSink, Run uses DeliverBatchBehind instead of DeliverBatch.
type BacklogSink interface {
	BatchSink
	DeliverBatchBehind(ctx context.Context, txs []schema.Transaction, behind bool) error
}

// BatchSinkFunc adapts a function to [BatchSink]; Deliver passes it a batch
// of one.
type BatchSinkFunc func(ctx context.Context, txs []schema.Transaction) error

// Deliver calls f with tx alone.
func (f BatchSinkFunc) Deliver(ctx context.Context, tx schema.Transaction) error {
	return f(ctx, []schema.Transaction{tx})
}

// DeliverBatch calls f.
func (f BatchSinkFunc) DeliverBatch(ctx context.Context, txs []schema.Transaction) error {
	return f(ctx, txs)
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
	// queueBytes bounds the bytes of the queued transactions held in
	// memory (queueBudget): what queueLen transactions of the old 256 KiB
	// spill threshold could hold, now that one may hold 1 MiB.
	queueBytes = 64 << 20
	// ioTimeout bounds connection setup and the final status update.
	ioTimeout = 10 * time.Second
	// maxBatchEvents cuts a batch (see MaxBatch) once its derived events
	// reach it, so that they do not pile up beside the queue's budget.
	maxBatchEvents = 8192
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
	budget  *queueBudget // bytes of the queue between the stream and delivery goroutines
	running atomic.Bool

	// Owned by the stream goroutine.
	bootstrapped bool
	lostSlot     bool          // an invalidated slot was dropped; its sync:reset is still owed
	pubGap       bool          // the slot was dropped to stream past a re-created publication
	statusEvery  time.Duration // this session's status interval (see statusInterval)
	leading      bool          // this consumer holds the leader lock (LockKey)
	standing     bool          // it said it stands by
	queuedCommit uint64        // commit LSN of the newest transaction queued for delivery
	queuedEnd    uint64        // its end LSN

	caughtUp     chan struct{} // closed once the first catch-up target is handed off
	caughtUpOnce sync.Once
	checkNow     chan struct{} // asks the checker goroutine for a check
	resyncNow    chan struct{} // asks the delivery goroutine to resync (see resync)
	stateMu      sync.Mutex    // the names state's bootstraps: the stream goroutine's and the delivery goroutine's resync

	mu            sync.Mutex // leaf lock; guards what follows
	status        Status
	target        uint64                  // the catch-up target; 0 until the first session read it
	problems      []ksql.TableProblem     // the checker's last findings
	checked       bool                    // the checker has reported once
	resyncPending bool                    // a watched table came back: its gap is still to be reported
	streamingAt   time.Time               // when the current session started streaming; zero between sessions
	streamed      bool                    // some session of this consumer streamed
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
		cfg:       cfg,
		log:       cfg.Logger,
		m:         newMetrics(cfg.Registerer),
		deriver:   d,
		ack:       newAcker(cfg.Retain),
		caughtUp:  make(chan struct{}),
		checkNow:  make(chan struct{}, 1),
		resyncNow: make(chan struct{}, 1),
		budget:    newQueueBudget(queueBytes),
	}
}

// SetOnLeading sets Config.OnLeading after New, for a caller whose callback
// needs the consumer itself. Call it before Run.
func (c *Consumer) SetOnLeading(f func(leading bool)) { c.cfg.OnLeading = f }

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
	// What was queued and never taken: its budget back, its spill files
	// closed. A next Run decodes it again.
	for len(queue) > 0 {
		item := <-queue
		c.budget.give(item.bytes)
		item.tx.Release()
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// deliver is the delivery goroutine: it derives each queued transaction
// (the deriver is only ever used here after bootstrap) and hands its events
// to the sink, the ones queued together in one call if it is a BatchSink.
func (c *Consumer) deliver(ctx context.Context, sink Sink, queue <-chan *committed) error {
	async, _ := sink.(AsyncSink)
	batcher, _ := sink.(BatchSink)
	backlog, _ := sink.(BacklogSink)
	limit := 1
	if batcher != nil && async == nil {
		limit = MaxBatch
	}
	inflight := &handoffs{c: c}
	var (
		carry *committed // taken from the queue for the next round: it reports a gap first
		txs   []schema.Transaction
		hs    []*handoff
		// The last batch was told behind: the sink may be holding it.
		holding bool
	)
	defer func() {
		if carry != nil { // out of the queue, so Run's cleanup would miss it
			carry.tx.Release()
		}
	}()
	for {
		item := carry
		if item == nil && holding && len(queue) == 0 {
			// What was queued behind the last batch derived no events: the
			// backlog ended without a batch to say so, and the sink must not
			// hold the newest frames.
			if err := backlog.DeliverBatchBehind(ctx, nil, false); err != nil {
				return fmt.Errorf("end a held backlog: %w", err)
			}
			holding = false
		}
		if item == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.resyncNow:
				c.resync(ctx)
				continue
			case item = <-queue:
				c.budget.give(item.bytes)
			}
		}
		// Before the transaction's events, and before it can be confirmed:
		// a recorded gap that cannot be delivered ends the session and is
		// decoded again by the next one.
		for _, reason := range item.tx.Gaps {
			if err := c.reportRecordedGap(ctx, sink, reason, item.tx.CommitLSN); err != nil {
				carry = nil
				item.tx.Release()
				return fmt.Errorf("report the gap recorded at %s: %w", pglogrepl.LSN(item.tx.CommitLSN), err)
			}
		}
		var err error
		txs, hs, carry, err = c.gather(item, queue, limit, inflight, txs[:0], hs[:0])
		if err != nil {
			return err
		}
		switch {
		case len(txs) == 0: // nothing to hand over
		case async != nil:
			h := hs[0]
			if err := async.DeliverAsync(ctx, txs[0], func() { inflight.done(h) }); err != nil {
				return fmt.Errorf("deliver transaction %s: %w", pglogrepl.LSN(txs[0].CommitLSN), err)
			}
		case backlog != nil:
			// Behind: decoded transactions wait in the queue. A gap next
			// (carry) is reported first, so nothing is held across it.
			holding = carry == nil && len(queue) > 0
			if err := backlog.DeliverBatchBehind(ctx, txs, holding); err != nil {
				return fmt.Errorf("deliver %d transactions from %s: %w", len(txs), pglogrepl.LSN(txs[0].CommitLSN), err)
			}
		case batcher != nil:
			if err := batcher.DeliverBatch(ctx, txs); err != nil {
				return fmt.Errorf("deliver %d transactions from %s: %w", len(txs), pglogrepl.LSN(txs[0].CommitLSN), err)
			}
		default:
			if err := sink.Deliver(ctx, txs[0]); err != nil {
				return fmt.Errorf("deliver transaction %s: %w", pglogrepl.LSN(txs[0].CommitLSN), err)
			}
		}
		if async == nil {
			for _, h := range hs {
				inflight.done(h)
			}
		}
		clear(txs) // the sink took the events over
		clear(hs)
	}
}

// gather derives item and, up to limit transactions and maxBatchEvents
// events, the transactions already queued behind it, never waiting for
// one; it appends those with events to txs and their handoffs to hs. It
// stops before a transaction that reports a gap first, which it returns as
// carry, for the next round.
func (c *Consumer) gather(item *committed, queue <-chan *committed, limit int, inflight *handoffs,
	txs []schema.Transaction, hs []*handoff) (_ []schema.Transaction, _ []*handoff, carry *committed, _ error) {
	events := 0
	for {
		tx, h, err := c.deriveItem(item, inflight)
		if err != nil {
			return txs, hs, nil, err
		}
		if h != nil {
			txs, hs = append(txs, tx), append(hs, h)
			events += len(tx.Events)
		}
		if len(txs) == 0 || len(txs) >= limit || events >= maxBatchEvents {
			return txs, hs, nil, nil
		}
		select {
		case item = <-queue:
			c.budget.give(item.bytes)
		default:
			return txs, hs, nil, nil
		}
		if len(item.tx.Gaps) > 0 {
			return txs, hs, item, nil
		}
	}
}

// deriveItem derives item and releases it. A transaction with events is added
// to inflight and returned with its handoff, to be done once delivered; one
// without is done at once (handed off once every earlier one is) and gets
// no handoff.
func (c *Consumer) deriveItem(item *committed, inflight *handoffs) (schema.Transaction, *handoff, error) {
	tx := c.deriver.Derive(item.tx)
	err := item.tx.Err()
	item.tx.Release()
	if err != nil {
		return tx, nil, fmt.Errorf("derive transaction %s: %w", pglogrepl.LSN(item.tx.CommitLSN), err)
	}
	h := inflight.add(item)
	if len(tx.Events) == 0 {
		inflight.done(h)
		return tx, nil, nil
	}
	return tx, h, nil
}

// handoffs orders completions: a transaction counts as handed off only once
// it and every transaction before it are done, whatever order the dones
// come in (an asynchronous sink's acknowledgements).
type handoffs struct {
	c       *Consumer
	mu      sync.Mutex
	pending []*handoff
}

type handoff struct {
	item *committed
	done bool
}

func (h *handoffs) add(item *committed) *handoff {
	x := &handoff{item: item}
	h.mu.Lock()
	h.pending = append(h.pending, x)
	h.mu.Unlock()
	return x
}

func (h *handoffs) done(x *handoff) {
	h.mu.Lock()
	x.done = true
	var ready []*committed
	for len(h.pending) > 0 && h.pending[0].done {
		ready = append(ready, h.pending[0].item)
		h.pending[0] = nil
		h.pending = h.pending[1:]
	}
	for _, item := range ready {
		// Under h.mu, so hand-offs are recorded in commit order even when
		// dones race.
		h.c.handOff(item)
	}
	h.mu.Unlock()
}

// handOff records that item and everything before it are handed off.
func (c *Consumer) handOff(item *committed) {
	now := time.Now()
	c.ack.handOff(item.end, item.tx.CommitLSN, now)
	c.m.lagSeconds.Set(max(0, now.Sub(item.tx.CommitTime).Seconds()))
	c.updateLag() // the gauges agree with Status().CaughtUp at once, not at the next keepalive
	c.checkCaughtUp()
}

// reportRecordedGap reports a gap an earlier session recorded (RecordGap):
// to the sink if it carries gaps itself, else to Config.OnReset.
func (c *Consumer) reportRecordedGap(ctx context.Context, sink Sink, reason string, commit uint64) error {
	c.log.Warn("reporting a gap an earlier session recorded in the stream", "reason", reason, "commit", pglogrepl.LSN(commit).String())
	if gs, ok := sink.(GapSink); ok {
		return gs.RecordedGap(ctx, reason, commit)
	}
	c.reset(reason)
	return nil
}

// reset reports a gap in the stream to Config.OnReset.
func (c *Consumer) reset(reason string) {
	if c.cfg.OnReset != nil {
		c.cfg.OnReset(reason)
	}
}

func (c *Consumer) setStreaming(on bool) {
	c.mu.Lock()
	if on != c.status.Streaming {
		c.streamingAt = time.Time{}
		if on {
			c.streamingAt = time.Now()
			c.streamed = true
		}
	}
	c.status.Streaming = on
	c.mu.Unlock()
}
