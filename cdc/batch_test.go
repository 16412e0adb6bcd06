package cdc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// batchRecorder is a BatchSink that records the batches it is given; its
// first call waits, so the stream queues what follows behind it.
type batchRecorder struct {
	mu      sync.Mutex
	batches [][]uint64 // commit LSNs per call
	single  int        // Deliver calls
	gaps    []string   // recorded gaps, with the transactions given before each
	first   sync.Once
}

func (b *batchRecorder) Deliver(ctx context.Context, tx schema.Transaction) error {
	b.mu.Lock()
	b.single++
	b.mu.Unlock()
	return nil
}

func (b *batchRecorder) DeliverBatch(ctx context.Context, txs []schema.Transaction) error {
	b.first.Do(func() { time.Sleep(300 * time.Millisecond) })
	var lsns []uint64
	for _, tx := range txs {
		lsns = append(lsns, tx.CommitLSN)
	}
	b.mu.Lock()
	b.batches = append(b.batches, lsns)
	b.mu.Unlock()
	return nil
}

// RecordedGap makes it a GapSink: it records how many transactions it had
// been given when the gap came.
func (b *batchRecorder) RecordedGap(_ context.Context, reason string, _ uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.single
	for _, lsns := range b.batches {
		n += len(lsns)
	}
	b.gaps = append(b.gaps, fmt.Sprintf("%s after %d", reason, n))
	return nil
}

func (b *batchRecorder) delivered() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var all []uint64
	for _, lsns := range b.batches {
		all = append(all, lsns...)
	}
	return all
}

// stoppedSlot makes a database with user1 and a slot streamed from once
// and stopped, so that what the test writes next waits in it as a backlog.
func stoppedSlot(t *testing.T) (url string, conn *pgx.Conn, slot string) {
	t.Helper()
	url, conn = koordiDB(t)
	slot = slotFor(url)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
	r := start(t, Config{ConnString: url, SlotName: slot}, newRecorder(), discard)
	waitStreaming(t, r.c)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	return url, conn, slot
}

// TestBatchSinkTakesTheBacklog: a backlog in the slot reaches a BatchSink
// in batches of what was queued together, each transaction once, in commit
// order, at most MaxBatch a call, and the slot is confirmed past all of it.
func TestBatchSinkTakesTheBacklog(t *testing.T) {
	url, conn, slot := stoppedSlot(t)
	const total = 300
	for i := range total {
		exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, fmt.Sprintf("n-%04d", i), user1)
	}
	sink := &batchRecorder{}
	start(t, Config{ConnString: url, SlotName: slot}, newRecorder(), sink)
	waitFor(t, "the backlog delivered", func() bool { return len(sink.delivered()) >= total })
	got := sink.delivered()
	if len(got) != total {
		t.Fatalf("%d transactions delivered, want %d", len(got), total)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("transaction %X delivered after %X", got[i], got[i-1])
		}
	}
	sink.mu.Lock()
	batches, single := len(sink.batches), sink.single
	largest := 0
	for _, b := range sink.batches {
		largest = max(largest, len(b))
	}
	sink.mu.Unlock()
	if single != 0 {
		t.Errorf("%d transactions went to Deliver, not DeliverBatch", single)
	}
	if largest < 2 || largest > MaxBatch {
		t.Fatalf("largest batch %d of %d calls: want 2..%d", largest, batches, MaxBatch)
	}
	waitFor(t, "the slot confirmed past the backlog", func() bool { return slotConfirmed(t, conn, slot) >= got[len(got)-1] })
}

// TestBatchSinkGapInPlace: a gap recorded in the middle of a backlog is
// reported after every transaction before it and before any after it,
// though the stream had both queued together.
func TestBatchSinkGapInPlace(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	cfg := Config{ConnString: url, SlotName: slot, GapKey: []byte("a gap key of thirty-two bytes!!!")}
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
	r := start(t, cfg, newRecorder(), discard)
	waitStreaming(t, r.c)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	write := func(from int) {
		for i := range 100 {
			exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, fmt.Sprintf("n-%04d", from+i), user1)
		}
	}
	write(0)
	if err := r.c.RecordGap(context.Background(), "publication_changed"); err != nil {
		t.Fatal(err)
	}
	write(100)
	sink := &batchRecorder{}
	r = start(t, cfg, newRecorder(), sink)
	waitFor(t, "the backlog delivered", func() bool { return len(sink.delivered()) >= 200 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.gaps) != 1 || sink.gaps[0] != "publication_changed after 100" {
		t.Fatalf("gaps %v, want publication_changed after the 100 transactions before it", sink.gaps)
	}
	largest := 0
	for _, b := range sink.batches {
		largest = max(largest, len(b))
	}
	if largest < 2 {
		t.Fatalf("no batch of more than one transaction (%d calls): the test did not exercise the carry", len(sink.batches))
	}
}

// backlogRecorder is a batchRecorder that is a BacklogSink: it records
// whether each call was told the stream was behind.
type backlogRecorder struct {
	batchRecorder
	plain  int    // DeliverBatch calls, which Run must not make
	behind []bool // per DeliverBatchBehind call
}

func (b *backlogRecorder) DeliverBatch(ctx context.Context, txs []schema.Transaction) error {
	b.mu.Lock()
	b.plain++
	b.mu.Unlock()
	return b.batchRecorder.DeliverBatch(ctx, txs)
}

func (b *backlogRecorder) DeliverBatchBehind(ctx context.Context, txs []schema.Transaction, behind bool) error {
	if err := b.batchRecorder.DeliverBatch(ctx, txs); err != nil {
		return err
	}
	b.mu.Lock()
	b.behind = append(b.behind, behind)
	b.mu.Unlock()
	return nil
}

// TestBacklogSinkToldWhenBehind: a BacklogSink is told "behind" while a
// backlog's transactions wait decoded in the queue, and never for the last
// batch of the backlog, after which nothing follows at once: a sink that
// holds frames while behind must not hold the newest.
func TestBacklogSinkToldWhenBehind(t *testing.T) {
	url, conn, slot := stoppedSlot(t)
	const total = 300
	for i := range total {
		exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, fmt.Sprintf("n-%04d", i), user1)
	}
	sink := &backlogRecorder{}
	start(t, Config{ConnString: url, SlotName: slot}, newRecorder(), sink)
	waitFor(t, "the backlog delivered", func() bool { return len(sink.delivered()) >= total })
	// The newest batch may still be reported: wait for its flag.
	waitFor(t, "the last batch's flag", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.behind) == len(sink.batches)
	})
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.plain != 0 || sink.single != 0 {
		t.Fatalf("DeliverBatch called %d times, Deliver %d: a BacklogSink gets DeliverBatchBehind", sink.plain, sink.single)
	}
	behind := 0
	for _, b := range sink.behind {
		if b {
			behind++
		}
	}
	if behind == 0 {
		t.Fatalf("none of %d batches of a 300-transaction backlog was told the stream is behind", len(sink.behind))
	}
	if sink.behind[len(sink.behind)-1] {
		t.Fatal("the backlog's last batch was told more follows")
	}
}

// slowStart derives nothing for users named "quiet-*" (as the rules derive
// nothing for an UPDATE of updated_at alone) and makes its first Derive
// wait, so that the whole backlog is decoded and queued before any batch is
// cut.
type slowStart struct {
	*recorder
	once sync.Once
}

func (s *slowStart) Derive(tx *wal.Tx) schema.Transaction {
	s.once.Do(func() { time.Sleep(time.Second) })
	out := s.recorder.Derive(tx)
	for _, c := range tx.Changes {
		if c.New.Has("name") && strings.HasPrefix(c.New.Get("name").Text, "quiet-") {
			out.Events = nil
		}
	}
	return out
}

// TestBacklogSinkHoldEndsAfterEventlessTail: when everything queued behind
// a batch told "behind" derives no events, no batch follows to say the
// backlog ended, so Run ends the hold with an empty call: the newest events
// must not wait for a sink's timer.
func TestBacklogSinkHoldEndsAfterEventlessTail(t *testing.T) {
	url, conn, slot := stoppedSlot(t)
	// Two full batches, then a tail without events: all of it fits the
	// queue, so the second batch is cut at MaxBatch with the tail behind it.
	const eventful, quiet = 2 * MaxBatch, 50
	for i := range eventful + quiet {
		name := fmt.Sprintf("n-%04d", i)
		if i >= eventful {
			name = fmt.Sprintf("quiet-%04d", i)
		}
		exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, name, user1)
	}
	sink := &backlogRecorder{}
	start(t, Config{ConnString: url, SlotName: slot}, &slowStart{recorder: newRecorder()}, sink)
	waitFor(t, "the backlog delivered", func() bool { return len(sink.delivered()) >= eventful })
	waitFor(t, "the hold ended", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.behind) > 0 && !sink.behind[len(sink.behind)-1]
	})
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if n := len(sink.behind); n < 2 || !sink.behind[n-2] || len(sink.batches[n-1]) != 0 {
		t.Fatalf("calls %d, behind %v: want the last full batch told behind, then an empty call ending the hold", n, sink.behind)
	}
}
