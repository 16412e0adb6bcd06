package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/schema"
)

// maxChunk bounds one message's payload, well under nats-server's default
// 1 MB max_payload.
const maxChunk = 512 << 10

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	JS     jetstream.JetStream
	Stream string
	// MaxInFlight bounds unacknowledged messages; default 256.
	MaxInFlight int
	// AckTimeout bounds one acknowledgement; default 5s.
	AckTimeout time.Duration
	// Fail is called once with the first failure, from any goroutine:
	// the term must end (see the package documentation).
	Fail    func(error)
	Logger  *slog.Logger
	Metrics *Metrics
}

// Publisher is the leader's sink: it appends each transaction to the stream
// (cdc.AsyncSink). One Publisher serves one leadership term.
type Publisher struct {
	cfg     PublisherConfig
	subject string

	// Owned by the delivery goroutine (DeliverAsync, Reset).
	started    bool
	lastSeq    uint64        // the stream sequence the next message follows
	lastCommit uint64        // the newest commit in the stream: older ones are in it already
	prev       schema.Offset // the offset of the last event published

	inflight chan inflight
	failOnce sync.Once
	failed   chan struct{}
	err      error // set before failed is closed
	stop     chan struct{}
	acks     sync.WaitGroup
}

type inflight struct {
	fut  jetstream.PubAckFuture
	seq  uint64 // the sequence it must land at
	sent time.Time
	done func() // non-nil on a transaction's last message
}

var _ cdc.AsyncSink = (*Publisher)(nil)

// NewPublisher returns a publisher; it reads the stream's tail at its first
// transaction, so a standby can hold one long before it leads.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	p := &Publisher{
		cfg: cfg, subject: Subject(cfg.Stream),
		inflight: make(chan inflight, cfg.MaxInFlight),
		failed:   make(chan struct{}), stop: make(chan struct{}),
	}
	p.acks.Add(1)
	go func() { defer p.acks.Done(); p.awaitAcks() }()
	return p
}

// Close ends the acknowledgement goroutine; unacknowledged messages stay
// unconfirmed (the next term decodes them again).
func (p *Publisher) Close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.acks.Wait()
}

func (p *Publisher) fail(err error) {
	p.failOnce.Do(func() {
		p.err = err
		close(p.failed)
		p.cfg.Logger.Warn("publishing to the feed failed: ending this term", "error", err)
		if p.cfg.Fail != nil {
			p.cfg.Fail(err)
		}
	})
}

// start reads the stream's tail: the sequence to follow and the newest
// commit in it.
func (p *Publisher) start(ctx context.Context) error {
	s, err := p.cfg.JS.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return fmt.Errorf("feed: stream %s: %w", p.cfg.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("feed: stream %s: %w", p.cfg.Stream, err)
	}
	p.lastSeq = info.State.LastSeq
	if info.State.Msgs > 0 {
		last, err := s.GetLastMsgForSubject(ctx, p.subject)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("feed: last message of %s: %w", p.cfg.Stream, err)
		}
		if last != nil {
			p.lastSeq = last.Sequence
			if c, err := strconv.ParseUint(last.Header.Get(headerCommit), 16, 64); err == nil {
				p.lastCommit = c
			}
			if off, err := schema.ParseOffset(last.Header.Get(headerLast)); err == nil {
				p.prev = off
			} else if off, err := schema.ParseOffset(last.Header.Get(headerPrev)); err == nil {
				p.prev = off // a reset carries no event of its own
			}
		}
	}
	p.started = true
	p.cfg.Logger.Info("publishing to the feed", "stream", p.cfg.Stream, "after_sequence", p.lastSeq,
		"after_commit", schema.Offset{LSN: p.lastCommit}.String())
	return nil
}

// Deliver publishes tx and waits for its acknowledgement.
func (p *Publisher) Deliver(ctx context.Context, tx schema.Transaction) error {
	return p.wait(ctx, func(done func()) error { return p.DeliverAsync(ctx, tx, done) })
}

// wait runs an asynchronous publish and waits until it is acknowledged, the
// publisher fails or ctx ends.
func (p *Publisher) wait(ctx context.Context, publish func(done func()) error) error {
	done := make(chan struct{})
	if err := publish(func() { close(done) }); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-p.failed:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DeliverAsync implements cdc.AsyncSink: it appends tx to the stream, in
// chunks, and calls done once all of them are acknowledged. A transaction
// the stream holds already (decoded again after a takeover) is done at once.
func (p *Publisher) DeliverAsync(ctx context.Context, tx schema.Transaction, done func()) error {
	select {
	case <-p.failed:
		return p.err
	default:
	}
	if !p.started {
		if err := p.start(ctx); err != nil {
			p.fail(err)
			return err
		}
	}
	if tx.CommitLSN <= p.lastCommit {
		done()
		return nil
	}
	chunks := split(tx)
	for i, ch := range chunks {
		data, err := json.Marshal(ch)
		if err != nil {
			return fmt.Errorf("feed: encode transaction: %w", err)
		}
		msg := nats.NewMsg(p.subject)
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ch.Events[0].Offset.String())
		msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(p.lastSeq, 10))
		msg.Header.Set(headerCommit, fmt.Sprintf("%016X", tx.CommitLSN))
		msg.Header.Set(headerPrev, p.prev.String())
		msg.Header.Set(headerLast, ch.Events[len(ch.Events)-1].Offset.String())
		var last func()
		if i == len(chunks)-1 {
			last = done
		}
		if err := p.publish(ctx, msg, last); err != nil {
			return err
		}
		p.prev = ch.Events[len(ch.Events)-1].Offset
	}
	p.lastCommit = tx.CommitLSN
	return nil
}

// Reset appends a gap (sync:reset on every node), in order with the
// transactions around it.
func (p *Publisher) Reset(ctx context.Context, reason string) error {
	if !p.started {
		if err := p.start(ctx); err != nil {
			p.fail(err)
			return err
		}
	}
	msg := nats.NewMsg(p.subject)
	msg.Data = []byte("{}")
	msg.Header.Set(jetstream.MsgIDHeader, "reset-"+nuid.Next())
	msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(p.lastSeq, 10))
	msg.Header.Set(headerReset, reason)
	msg.Header.Set(headerPrev, p.prev.String())
	// A reset may be the stream's last message when the next leader starts:
	// it must still say how far the stream got, or that leader would
	// publish its whole retained window again.
	msg.Header.Set(headerCommit, fmt.Sprintf("%016X", p.lastCommit))
	return p.wait(ctx, func(done func()) error { return p.publish(ctx, msg, done) })
}

func (p *Publisher) publish(ctx context.Context, msg *nats.Msg, done func()) error {
	fut, err := p.cfg.JS.PublishMsgAsync(msg)
	if err != nil {
		err = fmt.Errorf("feed: publish: %w", err)
		p.fail(err)
		return err
	}
	p.lastSeq++
	p.cfg.Metrics.published.Inc()
	select {
	case p.inflight <- inflight{fut: fut, seq: p.lastSeq, sent: time.Now(), done: done}:
		return nil
	case <-p.failed:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitAcks takes acknowledgements in publication order.
func (p *Publisher) awaitAcks() {
	for {
		var m inflight
		select {
		case m = <-p.inflight:
		case <-p.stop:
			return
		}
		timer := time.NewTimer(p.cfg.AckTimeout)
		select {
		case ack := <-m.fut.Ok():
			timer.Stop()
			// A duplicate took no sequence, so every later expected
			// sequence is off by one: end the term (the next one reads the
			// tail again) rather than accept it.
			if ack.Duplicate || ack.Sequence != m.seq {
				p.fail(fmt.Errorf("feed: message landed at sequence %d (duplicate %v), expected %d", ack.Sequence, ack.Duplicate, m.seq))
				continue
			}
			p.cfg.Metrics.ackLatency.Observe(time.Since(m.sent).Seconds())
			if m.done != nil {
				m.done()
			}
		case err := <-m.fut.Err():
			timer.Stop()
			p.fail(fmt.Errorf("feed: publish: %w", err))
		case <-timer.C:
			p.fail(fmt.Errorf("feed: no acknowledgement in %s", p.cfg.AckTimeout))
		case <-p.stop:
			timer.Stop()
			return
		}
	}
}

// split cuts a transaction into messages under maxChunk: each carries a run
// of the events and the moves placed among them (a move before event i goes
// with event i; moves after the last event go with the last chunk).
func split(tx schema.Transaction) []schema.Transaction {
	var chunks []schema.Transaction
	start, size := 0, 0
	cut := func(end int) {
		ch := schema.Transaction{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Xid: tx.Xid, Events: tx.Events[start:end]}
		last := end == len(tx.Events)
		for _, m := range tx.Moves {
			if m.At >= start && (m.At < end || last && m.At == end) {
				m.At -= start
				ch.Moves = append(ch.Moves, m)
			}
		}
		chunks = append(chunks, ch)
		start, size = end, 0
	}
	for i := range tx.Events {
		e := &tx.Events[i]
		n := len(e.Data) + len(e.Room) + len(e.Event) + 64
		if i > start && size+n > maxChunk {
			cut(i)
		}
		size += n
	}
	cut(len(tx.Events))
	return chunks
}
