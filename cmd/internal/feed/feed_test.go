package feed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 { // 100, the reset, 200
		t.Fatalf("stream holds %d messages, want 3", info.State.Msgs)
	}
}

type recordingGateway struct {
	mu      sync.Mutex
	txs     []schema.Transaction
	resumed []schema.Offset
}

func (g *recordingGateway) Publish(_ context.Context, tx schema.Transaction) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.txs = append(g.txs, tx)
	return nil
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
	gw := &recordingGateway{}
	var resets []string
	var mu sync.Mutex
	sub := NewSubscriber(SubscriberConfig{JS: js, Stream: "T", History: time.Minute, Gateway: gw,
		OnReset: func(r string) { mu.Lock(); resets = append(resets, r); mu.Unlock() }})
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(sctx) }()
	select {
	case <-sub.CaughtUp():
	case <-time.After(20 * time.Second):
		t.Fatal("not caught up")
	}
	cancel()
	<-done
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
