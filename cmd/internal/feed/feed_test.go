package feed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/internal/natsserver"
	"github.com/koordi/koordi-realtime/schema"
)

const (
	user = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
	cal  = "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	s, err := natsserver.Start(context.Background(), natsserver.Config{Dir: t.TempDir()})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(s.Stop)
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(context.Background(), js, StreamConfig{Name: "T", ReplayWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return js
}

// transaction builds a transaction of n events in the calendar room, with a
// join before the first.
func transaction(lsn uint64, n, dataBytes int) schema.Transaction {
	room := schema.CalendarRoom(cal)
	tx := schema.Transaction{CommitLSN: lsn, CommitTime: time.Now().UTC(), Xid: uint32(lsn)}
	for i := range n {
		tx.Events = append(tx.Events, schema.Envelope{Offset: schema.Offset{LSN: lsn, Index: uint32(i)}, Room: room, Event: "e",
			Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", dataBytes)))})
	}
	tx.Moves = []schema.Move{{At: 0, Op: schema.MoveJoin, User: user, Room: room}, {At: n, Op: schema.MoveClose, Room: room}}
	return tx
}

// stream reads every message of the stream: the transactions, in order.
func streamTxs(t *testing.T, js jetstream.JetStream) []schema.Transaction {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	var out []schema.Transaction
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := schema.DecodeTransaction(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, tx)
	}
	return out
}

// TestTwoPublishers: of two would-be leaders, the one whose message lands
// second after a shared tail is refused and fails; the stream stays one
// chain, in order, without duplicates.
func TestTwoPublishers(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	var failed sync.WaitGroup
	failed.Add(1)
	old := NewPublisher(PublisherConfig{JS: js, Stream: "T", Fail: func(error) { failed.Done() }})
	defer old.Close()
	if err := old.Deliver(ctx, transaction(100, 2, 0)); err != nil {
		t.Fatal(err)
	}
	// A new leader takes over and publishes what follows.
	next := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer next.Close()
	if err := next.Deliver(ctx, transaction(100, 2, 0)); err != nil { // decoded again: skipped
		t.Fatal(err)
	}
	if err := next.Deliver(ctx, transaction(200, 2, 0)); err != nil {
		t.Fatal(err)
	}
	// The old one, still holding a decoded transaction, publishes it.
	err := old.Deliver(ctx, transaction(300, 2, 0))
	if err == nil {
		t.Fatal("the stale leader's publish was accepted")
	}
	failed.Wait()
	var lsns []uint64
	for _, tx := range streamTxs(t, js) {
		lsns = append(lsns, tx.CommitLSN)
	}
	if fmt.Sprint(lsns) != "[100 200]" {
		t.Fatalf("stream holds commits %v, want [100 200]", lsns)
	}
	if err := next.Deliver(ctx, transaction(400, 1, 0)); err != nil {
		t.Fatalf("the new leader cannot go on: %v", err)
	}
}

// TestResetLastThenTakeover: a reset as the stream's last message still
// tells the next leader how far the stream got: what it decodes again is
// skipped, and what follows lands.
func TestResetLastThenTakeover(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	old := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	if err := old.Deliver(ctx, transaction(100, 2, 0)); err != nil {
		t.Fatal(err)
	}
	if err := old.Reset(ctx, "publication_changed"); err != nil {
		t.Fatal(err)
	}
	old.Close()
	next := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer next.Close()
	if err := next.Deliver(ctx, transaction(100, 2, 0)); err != nil { // decoded again: skipped
		t.Fatal(err)
	}
	if err := next.Deliver(ctx, transaction(200, 1, 0)); err != nil {
		t.Fatalf("after a reset tail the new leader cannot go on: %v", err)
	}
	if n := streamMsgs(t, js); n != 3 { // 100, the reset, 200
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}

// streamMsgs is the number of messages stream T holds.
func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

type recordingGateway struct {
	mu      sync.Mutex
	txs     []schema.Transaction
	batches []int  // transactions per PublishBehind call
	behind  []bool // its flag, per call
	resumed []schema.Offset
}

func (g *recordingGateway) PublishBehind(_ context.Context, txs []schema.Transaction, behind bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.txs = append(g.txs, txs...)
	g.batches = append(g.batches, len(txs))
	g.behind = append(g.behind, behind)
	return nil
}

// flagsAt returns the behind flags of the calls after which the gateway
// had got exactly n transactions.
func (g *recordingGateway) flagsAt(n int) (flags []bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	sum := 0
	for i, b := range g.batches {
		sum += b
		if sum == n {
			flags = append(flags, g.behind[i])
		}
	}
	return flags
}

func (g *recordingGateway) handed() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.txs)
}

// TestSubscriberBatchesBacklog: a node reading a backlog hands it to its
// gateway in batches (at most cdc.MaxBatch), every transaction once and in
// order, telling it while more is behind a batch, and what came before a
// gap (a message it cannot read, a reset) is handed over, not held, before
// the gap is reported.
func TestSubscriberBatchesBacklog(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	for i := range 150 {
		if err := p.Deliver(ctx, transaction(uint64(100+i), 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Reset(ctx, "slot_recreated"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := p.Deliver(ctx, transaction(uint64(260+i), 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	if _, err := js.Publish(ctx, Subject("T"), []byte(`{"not":"a transaction"`)); err != nil {
		t.Fatal(err)
	}
	next := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer next.Close()
	for i := range 10 {
		if err := next.Deliver(ctx, transaction(uint64(300+i), 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	gw := &recordingGateway{}
	gaps := make(chan string, 2)
	readStream(t, js, gw, func(r string) { gaps <- fmt.Sprintf("%s after %d", r, gw.handed()) })
	for _, want := range []string{"slot_recreated after 150", "feed_message_refused after 170"} {
		if got := <-gaps; got != want {
			t.Fatalf("gap %q, want %q: the transactions before it first", got, want)
		}
	}
	offs, _ := events(gw)
	if len(offs) != 180 {
		t.Fatalf("%d events handed over, want 180", len(offs))
	}
	for i := 1; i < len(offs); i++ {
		if offs[i].Compare(offs[i-1]) <= 0 {
			t.Fatalf("offset %v after %v", offs[i], offs[i-1])
		}
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	largest := slices.Max(gw.batches)
	if largest < 2 || largest > cdc.MaxBatch {
		t.Fatalf("batches %v: want some of 2..%d", gw.batches, cdc.MaxBatch)
	}
	if !slices.Contains(gw.behind, true) {
		t.Fatalf("batches %v: none told more was behind it", gw.batches)
	}
	gw.mu.Unlock()
	// Before a gap the batch may be told behind (the reset is pending),
	// but the hold ends before the gap is reported; the newest batch is
	// never told behind.
	for _, n := range []int{150, 170} {
		if f := gw.flagsAt(n); len(f) == 0 || f[len(f)-1] {
			t.Errorf("batches %v, behind %v: held across the gap after transaction %d", gw.batches, gw.behind, n)
		}
	}
	if f := gw.flagsAt(180); len(f) == 0 || slices.Contains(f, true) {
		t.Errorf("batches %v, behind %v: the newest batch told more was behind it", gw.batches, gw.behind)
	}
	gw.mu.Lock()
}

func (g *recordingGateway) ResumeAfter(off schema.Offset) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.resumed = append(g.resumed, off)
}

// TestChunksReachSubscriber: a transaction larger than a message is split,
// and a subscriber hands every chunk to its gateway in order, with the moves
// at their places; the first message read tells the gateway where it
// resumes; a reset arrives in its place.
func TestChunksReachSubscriber(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer p.Close()
	big := transaction(100, 3000, 300) // ~1 MB: several messages
	if err := p.Deliver(ctx, big); err != nil {
		t.Fatal(err)
	}
	if err := p.Reset(ctx, "slot_recreated"); err != nil {
		t.Fatal(err)
	}
	if err := p.Deliver(ctx, transaction(200, 1, 0)); err != nil {
		t.Fatal(err)
	}
	gw, resets := runSubscriber(t, js)
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if len(gw.txs) < 3 {
		t.Fatalf("%d transactions handed over, want the chunks and the last", len(gw.txs))
	}
	var events, moves int
	var last schema.Offset
	for _, tx := range gw.txs[:len(gw.txs)-1] {
		for _, e := range tx.Events {
			if e.Offset.Compare(last) <= 0 {
				t.Fatalf("offset %v after %v", e.Offset, last)
			}
			last = e.Offset
			events++
		}
		moves += len(tx.Moves)
	}
	first, lastChunk := gw.txs[0], gw.txs[len(gw.txs)-2]
	if events != 3000 || moves != 2 || first.Moves[0].At != 0 || lastChunk.Moves[len(lastChunk.Moves)-1].At != len(lastChunk.Events) {
		t.Fatalf("chunks carry %d events and %d moves (first %+v, last %+v)", events, moves, first.Moves, lastChunk.Moves)
	}
	if len(gw.resumed) != 1 || !gw.resumed[0].IsZero() {
		t.Fatalf("resumed %v, want once, from the start", gw.resumed)
	}
	if len(resets) != 1 || resets[0] != "slot_recreated" {
		t.Fatalf("resets %v", resets)
	}
}

// runSubscriber reads the whole stream T into a recording gateway.
func runSubscriber(t *testing.T, js jetstream.JetStream) (*recordingGateway, []string) {
	t.Helper()
	gw := &recordingGateway{}
	var resets []string
	var mu sync.Mutex
	readStream(t, js, gw, func(r string) { mu.Lock(); resets = append(resets, r); mu.Unlock() })
	mu.Lock()
	defer mu.Unlock()
	return gw, resets
}

// readStream runs a subscriber of stream T into gw until it has caught up.
func readStream(t *testing.T, js jetstream.JetStream, gw Gateway, onReset func(string)) {
	t.Helper()
	sub := NewSubscriber(SubscriberConfig{JS: js, Stream: "T", History: time.Minute, Gateway: gw, OnReset: onReset})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	select {
	case <-sub.CaughtUp():
	case <-time.After(20 * time.Second):
		t.Fatal("not caught up")
	}
	cancel()
	<-done
}

// events lists the offsets and data sizes handed to gw, in order.
func events(gw *recordingGateway) (offs []schema.Offset, sizes []int) {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for _, tx := range gw.txs {
		for _, e := range tx.Events {
			offs = append(offs, e.Offset)
			sizes = append(sizes, len(e.Data))
		}
	}
	return offs, sizes
}

// TestEventOverMaxPayload: an event larger than the server's max_payload
// travels in parts and reaches the subscriber whole; one larger than
// MaxFeedEvent becomes its room's sync:reset; the feed goes on after both.
func TestEventOverMaxPayload(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T", MaxPayload: js.Conn().MaxPayload()})
	defer p.Close()
	big := transaction(100, 3, 0)
	big.Events[1].Data = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("y", 3<<20)))
	if err := p.Deliver(ctx, big); err != nil {
		t.Fatal(err)
	}
	huge := transaction(200, 1, 0)
	huge.Events[0].Data = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("z", MaxFeedEvent)))
	if err := p.Deliver(ctx, huge); err != nil {
		t.Fatal(err)
	}
	// Small raw, over the bound once encoded: each < becomes \u003c.
	escaped := transaction(250, 1, 0)
	escaped.Events[0].Data = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("<", MaxFeedEvent/5)))
	if err := p.Deliver(ctx, escaped); err != nil {
		t.Fatal(err)
	}
	if err := p.Deliver(ctx, transaction(300, 1, 0)); err != nil {
		t.Fatal(err)
	}
	gw, resets := runSubscriber(t, js)
	offs, sizes := events(gw)
	if len(offs) != 6 || sizes[1] != len(big.Events[1].Data) || len(resets) != 0 {
		t.Fatalf("events %v of sizes %v, resets %v; want 6 with the second whole (%d bytes), no reset", offs, sizes, resets, len(big.Events[1].Data))
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for _, lsn := range []uint64{200, 250} {
		var got schema.Envelope
		moves := 0
		for _, tx := range gw.txs {
			if tx.CommitLSN == lsn {
				got = tx.Events[0]
				moves += len(tx.Moves)
			}
		}
		if got.Event != schema.SyncReset || got.Room != huge.Events[0].Room || string(got.Data) != `{"reason":"event_too_large"}` {
			t.Fatalf("the event over MaxFeedEvent (commit %d) arrived as %s %s %.80s", lsn, got.Room, got.Event, got.Data)
		}
		if moves != 2 {
			t.Fatalf("commit %d: %d moves arrived, want its join and close: they must not go with the event", lsn, moves)
		}
	}
	if big.Events[1].Event != "e" || len(huge.Events[0].Data) <= MaxFeedEvent {
		t.Fatal("the publisher changed the consumer's transaction")
	}
}

// failingJS publishes through the real JetStream until its budget of
// publishes is spent, then refuses: a leader dying between two messages of
// one transaction.
type failingJS struct {
	jetstream.JetStream
	left int
}

func (f *failingJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if f.left <= 0 {
		return nil, nats.ErrConnectionClosed
	}
	f.left--
	return f.JetStream.PublishMsgAsync(m, opts...)
}

// TestTakeoverInsideTransaction: a leader that dies after some of a
// transaction's messages landed leaves the stream ending inside it; the
// next leader publishes the rest — whole chunks after the last complete
// one, and a chunk cut in parts again from its first part — and every event
// reaches a subscriber once.
func TestTakeoverInsideTransaction(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tx     func() schema.Transaction
		landed int // messages of the dying leader that land
	}{
		{"chunks", func() schema.Transaction { return transaction(100, 3000, 300) }, 1},
		{"parts", func() schema.Transaction {
			tx := transaction(100, 2, 0)
			tx.Events[0].Data = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("y", 3<<20)))
			return tx
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := startJS(t)
			ctx := context.Background()
			failed := make(chan error, 1)
			old := NewPublisher(PublisherConfig{JS: &failingJS{JetStream: js, left: tc.landed}, Stream: "T",
				MaxPayload: js.Conn().MaxPayload(), Fail: func(err error) { failed <- err }})
			if err := old.Deliver(ctx, tc.tx()); err == nil {
				t.Fatal("the dying leader's transaction went through whole")
			}
			<-failed
			old.Close()
			next := NewPublisher(PublisherConfig{JS: js, Stream: "T", MaxPayload: js.Conn().MaxPayload()})
			defer next.Close()
			if err := next.Deliver(ctx, tc.tx()); err != nil {
				t.Fatal(err)
			}
			if err := next.Deliver(ctx, transaction(200, 1, 0)); err != nil {
				t.Fatal(err)
			}
			gw, _ := runSubscriber(t, js)
			offs, sizes := events(gw)
			want := tc.tx()
			if len(offs) != len(want.Events)+1 {
				t.Fatalf("%d events reached the subscriber, want %d", len(offs), len(want.Events)+1)
			}
			for i, e := range want.Events {
				if offs[i] != e.Offset || sizes[i] != len(e.Data) {
					t.Fatalf("event %d: %v of %d bytes, want %v of %d", i, offs[i], sizes[i], e.Offset, len(e.Data))
				}
			}
			gw.mu.Lock()
			defer gw.mu.Unlock()
			var moves int
			for _, tx := range gw.txs {
				moves += len(tx.Moves)
			}
			if moves != 4 { // each transaction's join and close, once
				t.Fatalf("%d moves reached the subscriber, want 4", moves)
			}
		})
	}
}

// TestResetWhileDelivering: gaps reported from the stream goroutine while
// the delivery goroutine publishes land in one chain with the transactions
// (run with -race: the publisher's tail is shared by both).
func TestResetWhileDelivering(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T", MaxInFlight: 4})
	defer p.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if err := p.Reset(ctx, "slot_recreated"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var acked sync.WaitGroup
	for i := range 200 {
		acked.Add(1)
		if err := p.DeliverAsync(ctx, transaction(uint64(100+i), 1, 0), acked.Done); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	acked.Wait()
	gw, resets := runSubscriber(t, js)
	offs, _ := events(gw)
	if len(offs) != 200 || len(resets) != 20 {
		t.Fatalf("%d events and %d resets reached the subscriber, want 200 and 20", len(offs), len(resets))
	}
}

// TestStreamCreatedAgain: a stream deleted under a running subscriber and
// created again starts over at sequence 1; the subscriber reports the gap
// (feed_recreated) and reads the new stream from its start.
func TestStreamCreatedAgain(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	if err := p.Deliver(ctx, transaction(100, 1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Deliver(ctx, transaction(150, 1, 0)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	gw := &recordingGateway{}
	resets := make(chan string, 4)
	sub := NewSubscriber(SubscriberConfig{JS: js, Stream: "T", History: time.Minute, Gateway: gw,
		OnReset: func(r string) { resets <- r }})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = sub.Run(sctx) }()
	<-sub.CaughtUp()
	if err := js.DeleteStream(ctx, "T"); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "T", ReplayWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	next := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer next.Close()
	if err := next.Deliver(ctx, transaction(200, 1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-resets:
		if r != "feed_recreated" {
			t.Fatalf("reset %q", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no reset for the stream created again")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		offs, _ := events(gw)
		if len(offs) == 3 && offs[2].LSN == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %v, want 100, 150, then 200 from the new stream", offs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRefusedMessageIsAGap: a message a node cannot read (not a
// transaction) is a gap there — its events and moves are lost — so it
// reports one instead of going on silently.
func TestRefusedMessageIsAGap(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	if _, err := js.Publish(ctx, Subject("T"), []byte(`{"not":"a transaction"`)); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer p.Close()
	if err := p.Deliver(ctx, transaction(100, 1, 0)); err != nil {
		t.Fatal(err)
	}
	gw, resets := runSubscriber(t, js)
	if offs, _ := events(gw); len(offs) != 1 || len(resets) != 1 || resets[0] != "feed_message_refused" {
		t.Fatalf("events %v, resets %v; want the one transaction and one feed_message_refused", offs, resets)
	}
}

// TestPipelinedAfterRefusal: a stale publisher's message (here a reset)
// takes the sequence a new leader's first message expected; that message is
// refused, and so is the one pipelined behind it, which expects the next
// sequence — it would otherwise land with the first missing before it.
func TestPipelinedAfterRefusal(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	old := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer old.Close()
	if err := old.Deliver(ctx, transaction(100, 1, 0)); err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	next := NewPublisher(PublisherConfig{JS: js, Stream: "T", Fail: func(err error) { failed <- err }})
	defer next.Close()
	if err := next.Deliver(ctx, transaction(100, 1, 0)); err != nil { // skipped: reads the tail
		t.Fatal(err)
	}
	if err := old.Reset(ctx, "slot_recreated"); err != nil { // lands first
		t.Fatal(err)
	}
	for _, lsn := range []uint64{200, 300} {
		if err := next.DeliverAsync(ctx, transaction(lsn, 1, 0), func() {}); err != nil {
			break
		}
	}
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the new leader did not fail")
	}
	// The server answers one connection's messages in order: once a
	// message sent after both of the new leader's has landed, both have
	// been answered.
	if _, err := js.Publish(ctx, Subject("T"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, js); n != 3 { // 100, the reset, the probe
		t.Fatalf("stream holds %d messages, want 3: a message landed behind a refused one", n)
	}
}

// TestTailDeletedByHand: a stream whose last message was deleted still
// takes the next leader's messages (the expectation names the stream's
// last sequence, not the last message's).
func TestTailDeletedByHand(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	p := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	for _, lsn := range []uint64{100, 200} {
		if err := p.Deliver(ctx, transaction(lsn, 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 2); err != nil {
		t.Fatal(err)
	}
	next := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer next.Close()
	if err := next.Deliver(ctx, transaction(300, 1, 0)); err != nil {
		t.Fatalf("after the tail message was deleted: %v", err)
	}
}

// TestRecordedGapOnce: a gap recorded in the stream is decoded again by
// every term within the replay window; only the first term that reaches it
// publishes its reset. A term that starts where the stream's tail is that
// reset, or a later transaction, skips it; a later record is published.
func TestRecordedGapOnce(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	old := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	if err := old.Deliver(ctx, transaction(100, 2, 0)); err != nil {
		t.Fatal(err)
	}
	if err := old.RecordedGap(ctx, "publication_changed", 150); err != nil {
		t.Fatal(err)
	}
	old.Close()

	second := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	for _, step := range []func() error{
		func() error { return second.Deliver(ctx, transaction(100, 2, 0)) },         // decoded again: skipped
		func() error { return second.RecordedGap(ctx, "publication_changed", 150) }, // the tail: skipped
		func() error { return second.Deliver(ctx, transaction(200, 1, 0)) },         // new
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	second.Close()

	third := NewPublisher(PublisherConfig{JS: js, Stream: "T"})
	defer third.Close()
	if err := third.RecordedGap(ctx, "publication_changed", 150); err != nil { // behind the tail: skipped
		t.Fatal(err)
	}
	if err := third.RecordedGap(ctx, "slot_recreated", 300); err != nil { // a new record
		t.Fatal(err)
	}
	_, resets := runSubscriber(t, js)
	if want := []string{"publication_changed", "slot_recreated"}; !slices.Equal(resets, want) {
		t.Fatalf("resets %v, want %v", resets, want)
	}
	if n := streamMsgs(t, js); n != 4 { // 100, the reset, 200, the second reset
		t.Fatalf("stream holds %d messages, want 4", n)
	}
}
