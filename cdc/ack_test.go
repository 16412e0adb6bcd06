package cdc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

func TestAckerSafePosition(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type step struct {
		op     string // "floor", "handoff", "idle", "safe"
		lsn    uint64
		queued uint64
		t      float64
		want   uint64 // for "safe"
	}
	tests := []struct {
		name   string
		retain time.Duration
		steps  []step
	}{
		{"no retain confirms hand-offs", 0, []step{
			{op: "floor", lsn: 100},
			{op: "safe", t: 0, want: 100},
			{op: "handoff", lsn: 150, t: 1},
			{op: "safe", t: 1, want: 150},
			{op: "handoff", lsn: 120, t: 2}, // never backwards
			{op: "safe", t: 2, want: 150},
		}},
		{"floor is a minimum", 0, []step{
			{op: "handoff", lsn: 50, t: 0},
			{op: "floor", lsn: 100},
			{op: "safe", t: 0, want: 100},
		}},
		{"idle only when everything queued is handed off", 0, []step{
			{op: "floor", lsn: 100},
			{op: "handoff", lsn: 150, t: 0},
			{op: "idle", queued: 200, lsn: 300, t: 1}, // 200 still in flight
			{op: "safe", t: 1, want: 150},
			{op: "handoff", lsn: 200, t: 2},
			{op: "idle", queued: 200, lsn: 300, t: 2},
			{op: "safe", t: 2, want: 300},
		}},
		{"retain trails by the window", 10 * time.Second, []step{
			{op: "floor", lsn: 100},
			{op: "handoff", lsn: 150, t: 0},
			{op: "handoff", lsn: 160, t: 5},
			{op: "safe", t: 9, want: 100},
			{op: "safe", t: 10, want: 150},
			{op: "safe", t: 14, want: 150},
			{op: "safe", t: 15, want: 160},
			{op: "handoff", lsn: 170, t: 20},
			{op: "safe", t: 29, want: 160},
			{op: "safe", t: 31, want: 170},
		}},
		{"retain merges close hand-offs into the older mark", 128 * time.Second, []step{
			{op: "floor", lsn: 1},
			{op: "handoff", lsn: 10, t: 0},
			{op: "handoff", lsn: 11, t: 0.5}, // within 1 s of the mark: merged
			{op: "handoff", lsn: 12, t: 2},
			{op: "safe", t: 128, want: 11},
			{op: "safe", t: 129.9, want: 11},
			{op: "safe", t: 130, want: 12},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAcker(tt.retain)
			for i, s := range tt.steps {
				switch s.op {
				case "floor":
					a.setFloor(s.lsn)
				case "handoff":
					a.handOff(s.lsn, s.lsn-1, at(s.t))
				case "idle":
					a.idle(s.queued, s.lsn, at(s.t))
				case "safe":
					if got := a.safe(at(s.t)); got != s.want {
						t.Fatalf("step %d: safe at %vs = %d, want %d", i, s.t, got, s.want)
					}
				}
			}
		})
	}
}

func TestAckerBounded(t *testing.T) {
	a := newAcker(time.Hour)
	t0 := time.Now()
	for i := 1; i <= 100000; i++ {
		a.handOff(uint64(i), uint64(i), t0.Add(time.Duration(i)*time.Second))
	}
	if len(a.marks) > maxMarks {
		t.Fatalf("%d marks, want at most %d", len(a.marks), maxMarks)
	}
}

// gate is a sink that accepts a number of transactions, then blocks the
// next one until released, which makes it fail.
type gate struct {
	mu       sync.Mutex
	accept   int
	accepted []uint64
	blocked  chan uint64
	release  chan struct{}
}

func newGate(accept int) *gate {
	return &gate{accept: accept, blocked: make(chan uint64, 1), release: make(chan struct{})}
}

func (g *gate) Deliver(ctx context.Context, tx schema.Transaction) error {
	g.mu.Lock()
	if g.accept > 0 {
		g.accept--
		g.accepted = append(g.accepted, tx.CommitLSN)
		g.mu.Unlock()
		return nil
	}
	g.mu.Unlock()
	g.blocked <- tx.CommitLSN
	select {
	case <-g.release:
		return errSinkClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestConfirmedNeverPassesSink: the slot's confirmed_flush_lsn reaches the
// transaction the sink accepted, never the one it is blocked on, not even
// after the sink fails; a new consumer gets the unaccepted transaction
// again with the same commit LSN.
func TestConfirmedNeverPassesSink(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	g := newGate(2)
	r := start(t, Config{ConnString: url, SlotName: slot, StatusInterval: 20 * time.Millisecond}, newRecorder(), g)
	waitStreaming(t, r.c)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'A')`, user1)
	exec(t, conn, `UPDATE users SET name = 'A1' WHERE id = $1`, user1)
	exec(t, conn, `UPDATE users SET name = 'A2' WHERE id = $1`, user1)
	exec(t, conn, `UPDATE users SET name = 'A3' WHERE id = $1`, user1)
	blocked := <-g.blocked
	g.mu.Lock()
	accepted := g.accepted[len(g.accepted)-1]
	g.mu.Unlock()

	waitFor(t, "confirmation of the accepted transaction", func() bool { return slotConfirmed(t, conn, slot) > accepted })
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got := slotConfirmed(t, conn, slot); got >= blocked {
			t.Fatalf("confirmed %X while the sink holds the transaction at %X", got, blocked)
		}
	}
	close(g.release)
	if err := r.wait(); !errors.Is(err, errSinkClosed) {
		t.Fatalf("Run after sink failure: %v, want the sink's error", err)
	}
	if got := slotConfirmed(t, conn, slot); got >= blocked {
		t.Fatalf("confirmed %X after the sink failed on %X", got, blocked)
	}

	rec := newRecorder()
	start(t, Config{ConnString: url, SlotName: slot}, rec, discard)
	again := rec.waitTx(t, func(*wal.Tx) bool { return true })
	if again.CommitLSN != blocked {
		t.Fatalf("after restart the first transaction is %X, want the unaccepted %X", again.CommitLSN, blocked)
	}
}

// TestRetainTrails: with Retain the confirmed position stays behind what
// was handed off for the whole window, also across a graceful stop, so a
// restarted process delivers the window again.
func TestRetainTrails(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, SlotName: slot, Retain: time.Hour, StatusInterval: 20 * time.Millisecond}, rec, discard)
	waitStreaming(t, r.c)
	initial := slotConfirmed(t, conn, slot)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'A')`, user1)
	tx := rec.waitTx(t, sets("users", "name", "A"))
	waitFor(t, "hand-off", func() bool { return r.c.Status().HandedOffLSN > tx.CommitLSN })
	time.Sleep(300 * time.Millisecond) // many status intervals
	if got := slotConfirmed(t, conn, slot); got > initial || got >= tx.CommitLSN {
		t.Fatalf("confirmed %X moved from %X within the retain window (handed off %X)", got, initial, tx.CommitLSN)
	}
	if st := r.c.Status(); st.ConfirmedLSN >= tx.CommitLSN {
		t.Fatalf("status confirms %X, handed off %X", st.ConfirmedLSN, tx.CommitLSN)
	}

	// A restarted process decodes the window again: same transaction,
	// same commit LSN, so the same offsets.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	// OnStream tells where the restarted stream starts, before anything of
	// it is delivered: the gateway uses it to let old sessions recover.
	confirmed := slotConfirmed(t, conn, slot)
	var from atomic.Uint64
	again := newRecorder()
	start(t, Config{ConnString: url, SlotName: slot, Retain: time.Hour,
		OnStream: func(lsn uint64) { from.CompareAndSwap(0, lsn) }}, again, discard)
	first := again.waitTx(t, func(*wal.Tx) bool { return true })
	if first.CommitLSN != tx.CommitLSN {
		t.Fatalf("after restart the window starts at %X, want %X", first.CommitLSN, tx.CommitLSN)
	}
	if got := from.Load(); got != confirmed || got >= first.CommitLSN {
		t.Fatalf("OnStream reported %X; want the slot's confirmed position %X, before the first commit %X", got, confirmed, first.CommitLSN)
	}
}

// TestBackpressureKeepsConnection: a sink that blocks for several
// wal_sender_timeouts while the queue is full does not lose the
// replication connection (status updates go on while the stream waits),
// and everything arrives in order afterwards.
func TestBackpressureKeepsConnection(t *testing.T) {
	url, conn := koordiDB(t)
	setTimeout := func(v string) {
		exec(t, conn, `ALTER SYSTEM SET wal_sender_timeout = `+quoteLiteral(v))
		exec(t, conn, `SELECT pg_reload_conf()`)
	}
	setTimeout("1s")
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), `ALTER SYSTEM RESET wal_sender_timeout`)
		_, _ = conn.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)

	release := make(chan struct{})
	var mu sync.Mutex
	var got []uint64
	sink := SinkFunc(func(ctx context.Context, tx schema.Transaction) error {
		<-release
		mu.Lock()
		got = append(got, tx.CommitLSN)
		mu.Unlock()
		return nil
	})
	r := start(t, Config{ConnString: url, StatusInterval: 200 * time.Millisecond}, newRecorder(), sink)
	waitStreaming(t, r.c)
	const total = queueLen + 100
	for i := 0; i < total; i++ {
		exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, fmt.Sprintf("n-%04d", i), user1)
	}
	time.Sleep(3 * time.Second) // three wal_sender_timeouts with the queue full
	close(release)
	waitFor(t, "every transaction", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == total
	})
	if st := r.c.Status(); st.Reconnects != 0 {
		t.Fatalf("%d reconnects under backpressure (last error %q)", st.Reconnects, st.LastError)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("delivered %X after %X", got[i], got[i-1])
		}
	}
}
