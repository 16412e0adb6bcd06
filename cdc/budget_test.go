package cdc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/koordi/koordi-realtime/schema"
)

func TestQueueBudget(t *testing.T) {
	b := newQueueBudget(100)
	if !b.take(500) {
		t.Fatal("a transaction larger than the budget must fit an empty queue")
	}
	if b.take(1) {
		t.Fatal("took a byte past the budget")
	}
	b.give(500)
	select {
	case <-b.freed:
	default:
		t.Fatal("give did not wake a waiting take")
	}
	for i := 0; i < 4; i++ {
		if !b.take(25) {
			t.Fatalf("take %d of 4×25 within 100 refused", i+1)
		}
	}
	if b.take(1) {
		t.Fatal("took past a full budget")
	}
	b.give(25)
	if !b.take(25) || b.take(1) {
		t.Fatal("the budget does not add up after a give")
	}
	if !b.take(0) {
		t.Fatal("a spilled transaction (0 bytes in memory) must always fit")
	}
}

// TestQueueWaitsForBudget: with delivery stalled, the stream decodes only
// as many large transactions as the queue's byte budget holds (plus the one
// in delivery and the one waiting for room), not queueLen of them; once
// delivery goes on, every one arrives.
func TestQueueWaitsForBudget(t *testing.T) {
	url, conn := koordiDB(t)
	cfg := Config{ConnString: url, SlotName: slotFor(url), StatusInterval: 50 * time.Millisecond}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(cfg, newRecorder())
	c.budget = newQueueBudget(1 << 20)
	release := make(chan struct{})
	var delivered atomic.Int32
	sink := SinkFunc(func(ctx context.Context, _ schema.Transaction) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		delivered.Add(1)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-done })
	waitStreaming(t, c)

	// Each about 580 KiB in memory (wal.approxSize): under the spill
	// threshold, two of them over the budget.
	const txs = 8
	for range txs {
		exec(t, conn, `INSERT INTO users (id, email, name)
			SELECT gen_random_uuid(), 'u' || i || '-' || gen_random_uuid() || '@example.com', repeat('x', 90)
			FROM generate_series(1, 900) AS i`)
	}
	decoded := func() int { return int(testutil.ToFloat64(c.m.transactions)) }
	// The stream is given time to decode what it may; it must stop at
	// three: one in delivery, one queued, one waiting for room.
	time.Sleep(2 * time.Second)
	if n := decoded(); n > 3 {
		t.Fatalf("%d of %d transactions decoded with delivery stalled and a budget of two; want at most 3", n, txs)
	}
	close(release)
	waitFor(t, "every transaction delivered", func() bool { return delivered.Load() == txs })
}
