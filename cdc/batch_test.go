package cdc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

// batchRecorder is a BatchSink that records the batches it is given; its
// first call waits, so the stream queues what follows behind it.
type batchRecorder struct {
	mu      sync.Mutex
	batches [][]uint64 // commit LSNs per call
	single  int        // Deliver calls
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

func (b *batchRecorder) delivered() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var all []uint64
	for _, lsns := range b.batches {
		all = append(all, lsns...)
	}
	return all
}

// TestBatchSinkTakesTheBacklog: a backlog in the slot reaches a BatchSink
// in batches of what was queued together, each transaction once, in commit
// order, at most MaxBatch a call, and the slot is confirmed past all of it.
func TestBatchSinkTakesTheBacklog(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
	r := start(t, Config{ConnString: url, SlotName: slot}, newRecorder(), discard)
	waitStreaming(t, r.c)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	const total = 300
	for i := range total {
		exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, fmt.Sprintf("n-%04d", i), user1)
	}
	sink := &batchRecorder{}
	r = start(t, Config{ConnString: url, SlotName: slot}, newRecorder(), sink)
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
