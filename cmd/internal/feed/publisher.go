package feed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/schema"
)

// Payload bounds. A message carries a run of a transaction's events of at
// most maxChunk bytes; one event larger than the server's max_payload
// (nats-server's default is 1 MB, a watched row's title can be longer) is
// cut into parts (header Koordi-Part "i/n") that subscribers put together
// again. An event larger than MaxFeedEvent is not carried: its room gets a
// sync:reset {reason: "event_too_large"} in its place, so that a subscriber
// never has to hold more than that for one message.
const (
	maxChunk = 512 << 10
	// MaxFeedEvent bounds one event on the feed.
	MaxFeedEvent = 32 << 20
	// headerRoom is what a message's headers may take of max_payload.
	headerRoom = 4 << 10
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	JS     jetstream.JetStream
	Stream string
	// MaxPayload is the server's max_payload (nats.Conn.MaxPayload);
	// default 1 MB, nats-server's default.
	MaxPayload int64
	// MaxInFlight bounds unacknowledged messages; default 256. The
	// JetStream context's own bound (jetstream.WithPublishAsyncMaxPending)
	// must be larger, or a full window stalls there and fails.
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
	cfg      PublisherConfig
	subject  string
	partSize int

	// mu serialises appends: the consumer's delivery goroutine delivers,
	// its stream goroutine reports gaps (Reset), and each append reads and
	// moves the tail below.
	mu      sync.Mutex
	started bool
	lastSeq uint64        // the stream sequence the next message follows
	lastID  string        // the Nats-Msg-Id of this term's last message; "" before its first
	prev    schema.Offset // the last event the stream holds: events up to it are in it already
	// tailCommit is the newest commit LSN a message of the stream names
	// (Koordi-Commit): a gap recorded in a transaction up to it was
	// published by an earlier term (RecordedGap).
	tailCommit uint64

	slots    chan struct{} // one per unacknowledged message
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
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 1 << 20
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
		partSize: int(max(cfg.MaxPayload-headerRoom, 1<<10)),
		slots:    make(chan struct{}, cfg.MaxInFlight),
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

// start reads the stream's tail: the sequence to follow and the last event
// in it. A tail that ends inside a transaction (its leader died between two
// of its messages) says so: the rest of that transaction is published, not
// the whole again, nor nothing.
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
			// The stream's last sequence, not the last message's: a tail
			// message deleted by hand leaves a gap the expectation must
			// name, or every publish is refused.
			p.lastSeq = max(p.lastSeq, last.Sequence)
			p.prev = tailOffset(last.Header)
			if c, err := strconv.ParseUint(last.Header.Get(headerCommit), 16, 64); err == nil {
				p.tailCommit = c
			}
		}
	}
	p.started = true
	p.cfg.Logger.Info("publishing to the feed", "stream", p.cfg.Stream, "after_sequence", p.lastSeq,
		"after_event", p.prev.String())
	return nil
}

// tailOffset is the last event a stream ending with a message of these
// headers holds completely.
func tailOffset(h nats.Header) schema.Offset {
	if i, n, ok := parsePart(h.Get(headerPart)); !ok || i == n {
		if off, err := schema.ParseOffset(h.Get(headerLast)); err == nil {
			return off
		}
	}
	// A reset carries no event of its own; an incomplete run of parts
	// holds none of its events.
	off, _ := schema.ParseOffset(h.Get(headerPrev))
	return off
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
// chunks, and calls done once all of them are acknowledged. The events the
// stream holds already (decoded again after a takeover) are skipped: a
// transaction the stream holds whole is done at once.
func (p *Publisher) DeliverAsync(ctx context.Context, tx schema.Transaction, done func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	tx = after(tx, p.prev)
	if len(tx.Events) == 0 {
		done()
		return nil
	}
	p.bound(&tx)
	chunks := split(tx)
	for i, ch := range chunks {
		data, err := json.Marshal(ch)
		if err != nil {
			return fmt.Errorf("feed: encode transaction: %w", err)
		}
		var last func()
		if i == len(chunks)-1 {
			last = done
		}
		first, lastEv := ch.Events[0].Offset, ch.Events[len(ch.Events)-1].Offset
		parts := (len(data) + p.partSize - 1) / p.partSize
		// Parts of one chunk differ from every earlier attempt's (a leader
		// that died between them): the duplicate window must not take the
		// second attempt's for the first's.
		attempt := nuid.Next()
		for k := range parts {
			msg := nats.NewMsg(p.subject)
			msg.Data = data[k*p.partSize : min((k+1)*p.partSize, len(data))]
			if parts == 1 {
				msg.Header.Set(jetstream.MsgIDHeader, first.String())
			} else {
				msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/%d/%s", first, k+1, attempt))
				msg.Header.Set(headerPart, fmt.Sprintf("%d/%d", k+1, parts))
			}
			msg.Header.Set(headerCommit, fmt.Sprintf("%016X", tx.CommitLSN))
			msg.Header.Set(headerPrev, p.prev.String())
			msg.Header.Set(headerLast, lastEv.String())
			var onAck func()
			if k == parts-1 {
				onAck = last
			}
			if err := p.publish(ctx, msg, onAck); err != nil {
				return err
			}
		}
		p.prev = lastEv
	}
	p.tailCommit = max(p.tailCommit, tx.CommitLSN)
	return nil
}

// after drops the events of tx up to prev, and the moves placed among them.
func after(tx schema.Transaction, prev schema.Offset) schema.Transaction {
	k := 0
	for k < len(tx.Events) && tx.Events[k].Offset.Compare(prev) <= 0 {
		k++
	}
	if k == 0 {
		return tx
	}
	out := tx
	out.Events = tx.Events[k:]
	out.Moves = nil
	if len(out.Events) == 0 {
		return out
	}
	for _, m := range tx.Moves {
		// A move placed before event k went with the message carrying
		// event k (see split), so it is not in the stream yet.
		if m.At >= k {
			m.At -= k
			out.Moves = append(out.Moves, m)
		}
	}
	return out
}

// bound replaces each event whose encoded form is larger than MaxFeedEvent
// with a sync:reset of its room (copying the events first: they are the
// consumer's).
func (p *Publisher) bound(tx *schema.Transaction) {
	var events []schema.Envelope
	for i, e := range tx.Events {
		size := encodedSize(e)
		if size <= MaxFeedEvent {
			continue
		}
		if events == nil {
			events = slices.Clone(tx.Events)
		}
		events[i] = schema.Envelope{Offset: e.Offset, Room: e.Room, Event: schema.SyncReset, Data: resetTooLarge}
		p.cfg.Logger.Warn("event too large for the feed: its room is told to refetch", "room", e.Room,
			"event", e.Event, "encoded_bytes", size, "max_bytes", MaxFeedEvent, "offset", e.Offset.String())
	}
	if events != nil {
		tx.Events = events
	}
}

// encodedSize is an event's size in a feed message: its JSON form escapes
// <, > and & as \u003c (six bytes for one) and U+2028/U+2029 likewise (six
// for three), so a payload of such characters grows up to six times.
func encodedSize(e schema.Envelope) int {
	n := len(e.Data) + len(e.Room) + len(e.Event) + 64
	n += 5 * (bytes.Count(e.Data, []byte("<")) + bytes.Count(e.Data, []byte(">")) + bytes.Count(e.Data, []byte("&")))
	n += 3 * (bytes.Count(e.Data, []byte("\u2028")) + bytes.Count(e.Data, []byte("\u2029")))
	return n
}

var resetTooLarge = json.RawMessage(`{"reason":"event_too_large"}`)

// Reset appends a gap (sync:reset on every node), in order with the
// transactions around it.
func (p *Publisher) Reset(ctx context.Context, reason string) error {
	return p.reset(ctx, reason, 0)
}

var _ cdc.GapSink = (*Publisher)(nil)

// RecordedGap appends a gap an earlier term recorded in the transaction
// committed at commitLSN (cdc.GapSink), unless the stream already holds a
// message of that commit or a later one: every term decodes the replay
// window again, and a takeover within it must not reset every socket again.
func (p *Publisher) RecordedGap(ctx context.Context, reason string, commitLSN uint64) error {
	return p.reset(ctx, reason, commitLSN)
}

// reset appends a reset; with a recorded commit it is skipped if the
// stream is past that commit, and names it as the message's.
func (p *Publisher) reset(ctx context.Context, reason string, recorded uint64) error {
	return p.wait(ctx, func(done func()) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.started {
			if err := p.start(ctx); err != nil {
				p.fail(err)
				return err
			}
		}
		commit := p.prev.LSN
		if recorded != 0 {
			if max(p.tailCommit, p.prev.LSN) >= recorded {
				p.cfg.Logger.Info("a recorded gap is in the feed already", "reason", reason, "commit", fmt.Sprintf("%016X", recorded))
				done()
				return nil
			}
			commit = recorded
		}
		msg := nats.NewMsg(p.subject)
		msg.Data = []byte("{}")
		msg.Header.Set(jetstream.MsgIDHeader, "reset-"+nuid.Next())
		msg.Header.Set(headerReset, reason)
		// A reset may be the stream's last message when the next leader
		// starts: it must still say how far the stream got (Koordi-Prev,
		// see tailOffset), or that leader would publish its whole retained
		// window again.
		msg.Header.Set(headerPrev, p.prev.String())
		msg.Header.Set(headerCommit, fmt.Sprintf("%016X", commit))
		if err := p.publish(ctx, msg, done); err != nil {
			return err
		}
		p.tailCommit = max(p.tailCommit, commit)
		return nil
	})
}

// publish sends msg after the tail, once a slot of the in-flight window is
// free.
func (p *Publisher) publish(ctx context.Context, msg *nats.Msg, done func()) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.failed:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
	msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(p.lastSeq, 10))
	if p.lastID != "" {
		// Pipelined messages expect their predecessor by id too: if it was
		// refused because another publisher's message took its sequence,
		// this one must not land at the next (see the package doc).
		msg.Header.Set(jetstream.ExpectedLastMsgIDHeader, p.lastID)
	}
	fut, err := p.cfg.JS.PublishMsgAsync(msg)
	if err != nil {
		<-p.slots
		err = fmt.Errorf("feed: publish: %w", err)
		p.fail(err)
		return err
	}
	p.lastSeq++
	p.lastID = msg.Header.Get(jetstream.MsgIDHeader)
	p.cfg.Metrics.published.Inc()
	// Never blocks: the channel has a place for every slot.
	p.inflight <- inflight{fut: fut, seq: p.lastSeq, sent: time.Now(), done: done}
	return nil
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
			// A duplicate took no sequence, so every later expected
			// sequence is off by one: end the term (the next one reads the
			// tail again) rather than accept it.
			if ack.Duplicate || ack.Sequence != m.seq {
				p.fail(fmt.Errorf("feed: message landed at sequence %d (duplicate %v), expected %d", ack.Sequence, ack.Duplicate, m.seq))
				break
			}
			p.cfg.Metrics.ackLatency.Observe(time.Since(m.sent).Seconds())
			if m.done != nil {
				m.done()
			}
		case err := <-m.fut.Err():
			p.fail(fmt.Errorf("feed: publish: %w", err))
		case <-timer.C:
			p.fail(fmt.Errorf("feed: no acknowledgement in %s", p.cfg.AckTimeout))
		case <-p.stop:
			timer.Stop()
			return
		}
		timer.Stop()
		<-p.slots
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
		n := encodedSize(*e)
		if i > start && size+n > maxChunk {
			cut(i)
		}
		size += n
	}
	cut(len(tx.Events))
	return chunks
}
