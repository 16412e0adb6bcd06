package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/schema"
)

// batchWait bounds how long transactions collected for a batch wait for
// the message JetStream said was behind them.
const batchWait = 5 * time.Millisecond

// Gateway is what a Subscriber feeds: transactions in order, several at
// once (up to cdc.MaxBatch) when the stream holds more behind them, with
// behind set when the next batch follows at once (the stream's NumPending),
// so that the gateway may hold a batch's frames for the next, as it does
// for the leader's own backlog (cdc.BacklogSink). A batch with behind unset
// is the newest this node has read.
type Gateway interface {
	PublishBehind(ctx context.Context, txs []schema.Transaction, behind bool) error
	ResumeAfter(off schema.Offset)
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	JS     jetstream.JetStream
	Stream string
	// History is how far back a starting node reads: the replay window, so
	// it can recover sessions of the other nodes.
	History time.Duration
	Gateway Gateway
	// OnReset is called, in order, for a gap in the stream.
	OnReset func(reason string)
	// Recreate, if set, creates the stream when it is missing (deleted by
	// hand): every node needs it, and a leader with nothing to publish
	// would not notice.
	Recreate func(ctx context.Context) error
	Logger   *slog.Logger
	Metrics  *Metrics
}

// Subscriber reads the feed in order and hands each transaction to its
// gateway: moves before later events, duplicates dropped by offset (the
// gateway's), the replay window filled from the history it starts with.
type Subscriber struct {
	cfg      SubscriberConfig
	caughtUp chan struct{}
	once     sync.Once

	target    atomic.Uint64 // the stream's last sequence at start: caught up once delivered
	delivered atomic.Uint64 // the newest stream sequence handed to the gateway
	lastCheck atomic.Int64  // unix ns of the last answer of the stream's state
	streamEnd atomic.Uint64 // the stream's last sequence at that answer
	missing   atomic.Bool   // the stream was not found at the last look

	// Owned by the reading goroutine.
	created  time.Time // of the stream read: another one is a new stream
	resumed  bool
	asm      assembly
	batch    []schema.Transaction // read, not yet handed to the gateway
	lastRead uint64               // stream sequence of the newest message read
	held     bool                 // the last batch went with behind set: the gateway may hold it
}

// NewSubscriber returns a subscriber; Run starts it.
func NewSubscriber(cfg SubscriberConfig) *Subscriber {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Subscriber{cfg: cfg, caughtUp: make(chan struct{})}
}

// CaughtUp is closed once the node has applied everything the stream held
// when it started.
func (s *Subscriber) CaughtUp() <-chan struct{} { return s.caughtUp }

// Current reports whether the feed is current: the stream answered within
// the last few seconds and this node has applied all of it.
func (s *Subscriber) Current() (bool, string) {
	at := s.lastCheck.Load()
	if s.missing.Load() {
		return false, "the feed's stream " + s.cfg.Stream + " is missing"
	}
	if at == 0 || time.Since(time.Unix(0, at)) > 6*time.Second {
		return false, "the feed (NATS) has not answered for a while"
	}
	if end, got := s.streamEnd.Load(), s.delivered.Load(); got < end {
		return false, fmt.Sprintf("the feed is behind: applied sequence %d of %d", got, end)
	}
	return true, ""
}

// Run reads the feed until ctx ends. The ordered consumer survives NATS
// outages and reconnects by itself; Run returns only with ctx.
func (s *Subscriber) Run(ctx context.Context) error {
	said := ""
	for {
		began := time.Now()
		err := s.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > 10*time.Second {
			said = "" // a new outage is said again
		}
		// Once per cause: a stream missing until the leader creates it
		// again, or NATS down, would say the same every second.
		if err.Error() != said {
			s.cfg.Logger.Warn("feed consumer stopped; starting again", "error", err)
			said = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// errStreamReplaced ends a run whose stream was deleted (and perhaps
// created again): its sequences mean nothing any more.
var errStreamReplaced = errors.New("the feed's stream was deleted or created again")

func (s *Subscriber) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx) // ends this run's goroutines
	defer cancel(nil)
	stream, err := s.cfg.JS.Stream(ctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s.missing.Store(true)
		if s.cfg.Recreate == nil {
			return fmt.Errorf("stream %s: %w", s.cfg.Stream, err)
		}
		if err := s.cfg.Recreate(ctx); err != nil {
			return fmt.Errorf("stream %s missing; creating it again: %w", s.cfg.Stream, err)
		}
		s.cfg.Logger.Warn("the feed's stream was missing: created it again", "stream", s.cfg.Stream)
		stream, err = s.cfg.JS.Stream(ctx, s.cfg.Stream)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.cfg.Stream, err)
	}
	s.missing.Store(false)
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.cfg.Stream, err)
	}
	fromStart := false
	if !s.created.IsZero() && (!info.Created.Equal(s.created) || info.State.LastSeq < s.delivered.Load()) {
		// Deleted and created again (by an operator, or by the leader after
		// that): what this node had not read of the old stream is gone, and
		// the new one starts over at sequence 1. Everything in the new one
		// comes after the gap.
		s.cfg.Logger.Warn("the feed's stream was created again: what it held is lost; clients told to refetch",
			"stream", s.cfg.Stream, "applied_sequence", s.delivered.Load(), "created", info.Created)
		s.delivered.Store(0)
		s.asm, s.lastRead = assembly{}, 0
		clear(s.batch) // of the old stream, if its last delivery failed
		s.batch = s.batch[:0]
		fromStart = true
		if s.cfg.OnReset != nil {
			s.cfg.OnReset("feed_recreated")
		}
	}
	s.created = info.Created
	s.observe(info.State.LastSeq)
	if s.target.Load() == 0 {
		s.target.Store(max(info.State.LastSeq, 1))
		if info.State.LastSeq == 0 {
			s.markCaughtUp()
		}
	}
	ccfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{Subject(s.cfg.Stream)}}
	switch seq := s.delivered.Load(); {
	case seq > 0:
		// Starting again within the process: after what was applied.
		ccfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		ccfg.OptStartSeq = seq + 1
	case fromStart:
		ccfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		start := time.Now().Add(-s.cfg.History)
		ccfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		ccfg.OptStartTime = &start
	}
	cons, err := s.cfg.JS.OrderedConsumer(ctx, s.cfg.Stream, ccfg)
	if err != nil {
		return fmt.Errorf("feed consumer: %w", err)
	}
	if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 {
		// Nothing within the history to read (or all of it older).
		s.markCaughtUp()
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("feed consumer: %w", err)
	}
	defer msgs.Stop()
	go s.watch(ctx, stream, info.Created, cancel)
	go func() { <-ctx.Done(); msgs.Stop() }()
	// Transactions are collected while the stream holds more behind the
	// one read (a node catching up, a burst) and handed over together; the
	// last message of the stream goes at once. What was read is handed over
	// also when the reading ends, so that the next run, which starts after
	// what was delivered, finds the assembly of parts where it left it.
	defer func() {
		if err := s.flush(context.WithoutCancel(ctx), false); err != nil {
			s.cfg.Logger.Warn("feed: what was read last is not delivered", "error", err)
		}
	}()
	for {
		var next []jetstream.NextOpt
		if len(s.batch) > 0 || s.held {
			// NumPending said more was coming; it may not (it expired under
			// MaxAge, the stream was purged): what is batched, or held by
			// the gateway, waits no longer than batchWait.
			next = append(next, jetstream.NextMaxWait(batchWait))
		}
		m, err := msgs.Next(next...)
		if errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			if err := s.flush(ctx, false); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return context.Cause(ctx)
			}
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		if err := s.take(ctx, m); err != nil {
			return err
		}
		s.lastRead = meta.Sequence.Stream
		if meta.NumPending == 0 {
			s.cfg.Metrics.lag.Set(0)
		}
		if meta.NumPending == 0 || len(s.batch) >= cdc.MaxBatch {
			if err := s.flush(ctx, meta.NumPending > 0); err != nil {
				return err
			}
		}
	}
}

// flush hands the collected transactions to the gateway, telling it
// whether more are behind them, and counts everything read so far as
// delivered. A call with nothing collected still tells a gateway holding
// the previous batch that nothing follows.
func (s *Subscriber) flush(ctx context.Context, behind bool) error {
	if len(s.batch) > 0 || (s.held && !behind) {
		if err := s.cfg.Gateway.PublishBehind(ctx, s.batch, behind); err != nil {
			return err
		}
		s.held = behind
		clear(s.batch)
		s.batch = s.batch[:0]
	}
	if s.lastRead > s.delivered.Load() {
		s.delivered.Store(s.lastRead)
		if s.lastRead >= s.target.Load() {
			s.markCaughtUp()
		}
	}
	return nil
}

func (s *Subscriber) markCaughtUp() {
	s.once.Do(func() {
		s.cfg.Logger.Info("feed caught up")
		close(s.caughtUp)
	})
}

// maxAssembled bounds a message put together from parts: the largest event
// the publisher carries and a chunk's worth around it.
const maxAssembled = MaxFeedEvent + 2*maxChunk

// assembly is a message cut in parts, read so far.
type assembly struct {
	n, next int    // part next of n is expected; n == 0: none under way
	key     string // Koordi-Prev and Koordi-Last, the same on every part
	buf     []byte
}

// take reads one message: a transaction joins the batch; a part of one is
// put together; a reset or a message this node cannot read is a gap,
// reported after the batch before it is handed over, so that it keeps its
// place in the stream's order.
func (s *Subscriber) take(ctx context.Context, m jetstream.Msg) error {
	s.cfg.Metrics.received.Inc()
	h := m.Headers()
	data, complete, refused := s.assemble(h, m.Data())
	if refused != "" {
		return s.refuse(ctx, refused)
	}
	if !complete {
		return nil
	}
	if !s.resumed {
		// The first message read: every event after its predecessor
		// reaches this node, so sessions begun on other nodes recover.
		s.resumed = true
		if prev, err := schema.ParseOffset(h.Get(headerPrev)); err == nil {
			s.cfg.Gateway.ResumeAfter(prev)
		}
	}
	if reason := h.Get(headerReset); reason != "" {
		return s.gap(ctx, reason)
	}
	tx, err := schema.DecodeTransaction(data)
	if err != nil {
		return s.refuse(ctx, err.Error())
	}
	if !tx.CommitTime.IsZero() {
		s.cfg.Metrics.lag.Set(max(0, time.Since(tx.CommitTime).Seconds()))
	}
	s.batch = append(s.batch, tx)
	return nil
}

// gap reports a gap in the stream after what came before it.
func (s *Subscriber) gap(ctx context.Context, reason string) error {
	if s.cfg.OnReset == nil {
		return nil
	}
	if err := s.flush(ctx, false); err != nil {
		return err
	}
	s.cfg.OnReset(reason)
	return nil
}

// assemble puts parts together: it returns a message once complete. A run
// of parts whose start this node did not read (its history began inside
// it) or that its leader left unfinished (the next leader publishes that
// message again, whole) is dropped.
func (s *Subscriber) assemble(h nats.Header, data []byte) (whole []byte, complete bool, refused string) {
	i, n, isPart := parsePart(h.Get(headerPart))
	if !isPart {
		if s.asm.n != 0 {
			s.dropAssembly("the rest never came")
		}
		return data, true, ""
	}
	key := h.Get(headerPrev) + " " + h.Get(headerLast)
	switch {
	case i == 1:
		if s.asm.n != 0 {
			s.dropAssembly("published again")
		}
		s.asm = assembly{n: n, next: 1, key: key}
	case s.asm.n == 0:
		return nil, false, "" // its first part is before this node's history
	case i != s.asm.next || n != s.asm.n || key != s.asm.key:
		s.dropAssembly("parts out of sequence")
		return nil, false, ""
	}
	if len(s.asm.buf)+len(data) > maxAssembled {
		s.dropAssembly("larger than the feed carries")
		return nil, false, fmt.Sprintf("a message in parts over %d bytes", maxAssembled)
	}
	s.asm.buf = append(s.asm.buf, data...)
	s.asm.next++
	if i < n {
		return nil, false, ""
	}
	whole = s.asm.buf
	s.asm = assembly{}
	return whole, true, ""
}

// refuse drops a message this node cannot apply. Its events, and the moves
// among them, are lost here: the node reports a gap (sync:reset, the
// memberships read again), as for any other.
func (s *Subscriber) refuse(ctx context.Context, why string) error {
	s.cfg.Metrics.rejected.Inc()
	s.cfg.Logger.Error("feed message refused: clients told to refetch", "error", why)
	return s.gap(ctx, "feed_message_refused")
}

func (s *Subscriber) dropAssembly(why string) {
	s.cfg.Logger.Warn("feed message in parts dropped", "why", why, "parts_read", s.asm.next-1, "parts", s.asm.n)
	s.asm = assembly{}
}

func (s *Subscriber) observe(lastSeq uint64) {
	s.streamEnd.Store(lastSeq)
	s.lastCheck.Store(time.Now().UnixNano())
}

// watch polls the stream's state, for Current, and ends the run when the
// stream it reads is gone.
func (s *Subscriber) watch(ctx context.Context, stream jetstream.Stream, created time.Time, end context.CancelCauseFunc) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := stream.Info(c)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			s.missing.Store(true)
			end(errStreamReplaced)
			return
		case err == nil && !info.Created.Equal(created):
			end(errStreamReplaced)
			return
		case err == nil:
			s.observe(info.State.LastSeq)
		}
	}
}
