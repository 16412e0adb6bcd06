package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/koordi/koordi-realtime/schema"
)

// Gateway is what a Subscriber feeds.
type Gateway interface {
	Publish(ctx context.Context, tx schema.Transaction) error
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
	Logger  *slog.Logger
	Metrics *Metrics
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
	resumed   bool
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
	for {
		err := s.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.cfg.Logger.Warn("feed consumer stopped; starting again", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (s *Subscriber) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx) // ends this run's goroutines
	defer cancel()
	stream, err := s.cfg.JS.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.cfg.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.cfg.Stream, err)
	}
	s.observe(info.State.LastSeq)
	if s.target.Load() == 0 {
		s.target.Store(max(info.State.LastSeq, 1))
		if info.State.LastSeq == 0 {
			s.markCaughtUp()
		}
	}
	ccfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{Subject(s.cfg.Stream)}}
	if seq := s.delivered.Load(); seq > 0 {
		// Starting again within the process: after what was applied.
		ccfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		ccfg.OptStartSeq = seq + 1
	} else {
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
	go s.watch(ctx, stream)
	go func() { <-ctx.Done(); msgs.Stop() }()
	for {
		m, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		if err := s.apply(ctx, m); err != nil {
			return err
		}
		s.delivered.Store(meta.Sequence.Stream)
		if meta.NumPending == 0 {
			s.cfg.Metrics.lag.Set(0)
		}
		if meta.Sequence.Stream >= s.target.Load() {
			s.markCaughtUp()
		}
	}
}

func (s *Subscriber) markCaughtUp() {
	s.once.Do(func() {
		s.cfg.Logger.Info("feed caught up")
		close(s.caughtUp)
	})
}

// apply hands one message to the gateway.
func (s *Subscriber) apply(ctx context.Context, m jetstream.Msg) error {
	s.cfg.Metrics.received.Inc()
	h := m.Headers()
	if !s.resumed {
		// The first message read: every event after its predecessor
		// reaches this node, so sessions begun on other nodes recover.
		s.resumed = true
		if prev, err := schema.ParseOffset(h.Get(headerPrev)); err == nil {
			s.cfg.Gateway.ResumeAfter(prev)
		}
	}
	if reason := h.Get(headerReset); reason != "" {
		if s.cfg.OnReset != nil {
			s.cfg.OnReset(reason)
		}
		return nil
	}
	tx, err := schema.DecodeTransaction(m.Data())
	if err != nil {
		s.cfg.Metrics.rejected.Inc()
		s.cfg.Logger.Error("feed message refused", "error", err)
		return nil
	}
	if !tx.CommitTime.IsZero() {
		s.cfg.Metrics.lag.Set(max(0, time.Since(tx.CommitTime).Seconds()))
	}
	return s.cfg.Gateway.Publish(ctx, tx)
}

func (s *Subscriber) observe(lastSeq uint64) {
	s.streamEnd.Store(lastSeq)
	s.lastCheck.Store(time.Now().UnixNano())
}

// watch polls the stream's state, for Current.
func (s *Subscriber) watch(ctx context.Context, stream jetstream.Stream) {
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
		if err == nil {
			s.observe(info.State.LastSeq)
		}
	}
}
