package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/koordi/koordi-realtime/cdc/derive"
)

// TestResumesAfterPostgresRestart restarts PostgreSQL (clean and crash)
// while a writer commits single-row updates: the consumer reconnects on its
// own and every commit the writer saw succeed is decoded.
func TestResumesAfterPostgresRestart(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			url, conn := koordiDB(t)
			exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
			rec := newRecorder()
			r := start(t, Config{ConnString: url}, rec, discard)
			waitStreaming(t, r.c)

			const total = 400
			var (
				mu    sync.Mutex
				acked = map[string]bool{}
			)
			progress := make(chan int, total)
			writerDone := make(chan error, 1)
			go func() { writerDone <- write(url, total, progress, &mu, acked) }()
			for n := range progress {
				if n == total/3 {
					break
				}
			}
			if err := cluster.Restart(context.Background(), mode); err != nil {
				t.Fatal(err)
			}
			if err := <-writerDone; err != nil {
				t.Fatal(err)
			}

			seen := map[string]bool{}
			waitFor(t, "every acknowledged commit", func() bool {
				for {
					select {
					case tx := <-rec.ch:
						for _, c := range tx.Changes {
							seen[c.New.Get("name").Text] = true
						}
						continue
					default:
					}
					break
				}
				mu.Lock()
				defer mu.Unlock()
				for name := range acked {
					if !seen[name] {
						return false
					}
				}
				return true
			})
			if st := r.c.Status(); st.Reconnects == 0 {
				t.Fatalf("status %+v: no reconnect recorded across a restart", st)
			}
		})
	}
}

// write commits total single-row updates, each on its own, reconnecting
// through a restart; acked records the names whose COMMIT succeeded.
func write(url string, total int, progress chan<- int, mu *sync.Mutex, acked map[string]bool) error {
	defer close(progress)
	ctx := context.Background()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(ctx)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < total; {
		if time.Now().After(deadline) {
			return fmt.Errorf("writer stuck at %d of %d", i, total)
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn = c
		}
		name := fmt.Sprintf("n-%04d", i)
		if _, err := conn.Exec(ctx, `UPDATE users SET name = $1 WHERE id = $2`, name, user1); err != nil {
			conn.Close(ctx)
			conn = nil
			continue // may or may not have committed: retried, and only acked names are required
		}
		mu.Lock()
		acked[name] = true
		mu.Unlock()
		i++
		progress <- i
	}
	return nil
}

// TestReconnectDerivesOnce cuts the replication connection (the walsender
// is terminated) several times while transactions stream: the consumer
// reconnects by itself, PostgreSQL resends what was not yet confirmed, and
// each transaction is still derived exactly once, in commit order.
func TestReconnectDerivesOnce(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
	rec := newRecorder()
	// A long status interval keeps the confirmed position behind, so every
	// reconnect replays transactions this process already has.
	r := start(t, Config{ConnString: url, SlotName: slot, StatusInterval: time.Hour}, rec, discard)
	waitStreaming(t, r.c)
	const total = 200
	for i := 0; i < total; i++ {
		exec(t, conn, `UPDATE users SET name = $1 WHERE id = $2`, fmt.Sprintf("n-%04d", i), user1)
		if i%50 == 25 {
			before := r.c.Status().Reconnects
			exec(t, conn, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
			waitFor(t, "a new replication connection", func() bool {
				st := r.c.Status()
				return st.Reconnects > before && st.Streaming
			})
		}
	}
	rec.waitTx(t, sets("users", "name", fmt.Sprintf("n-%04d", total-1)))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var prev uint64
	names := map[string]int{}
	for _, tx := range rec.txs {
		if tx.CommitLSN <= prev {
			t.Fatalf("transaction %X derived after %X", tx.CommitLSN, prev)
		}
		prev = tx.CommitLSN
		for _, c := range tx.Changes {
			names[c.New.Get("name").Text]++
		}
	}
	for i := 0; i < total; i++ {
		if n := names[fmt.Sprintf("n-%04d", i)]; n != 1 {
			t.Fatalf("n-%04d derived %d times", i, n)
		}
	}
	if decoded := testutil.ToFloat64(r.c.m.transactions); int(decoded) <= len(rec.txs) {
		t.Fatalf("decoded %v transactions, derived %d: no transaction was sent again, the test did not exercise the skip", decoded, len(rec.txs))
	}
	if st := r.c.Status(); st.Reconnects < 3 {
		t.Fatalf("%d reconnects, want at least 3", st.Reconnects)
	}
}

// TestSlotDroppedWhileStreaming: a slot that disappears under a running
// consumer is created again, OnReset reports the gap, and streaming goes on.
func TestSlotDroppedWhileStreaming(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	resets := make(chan string, 4)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, SlotName: slot, OnReset: func(reason string) { resets <- reason }}, rec, discard)
	waitStreaming(t, r.c)
	// A slot created at the first start is a gap for sessions of an earlier
	// process (one that ran on a slot since dropped).
	if reason := waitReset(t, resets); reason != "slot_created" {
		t.Fatalf("first start: OnReset(%q), want slot_created", reason)
	}
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'before')`, user1)
	rec.waitTx(t, sets("users", "name", "before"))

	ctx := context.Background()
	waitFor(t, "the slot dropped", func() bool {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		return err == nil
	})
	if reason := waitReset(t, resets); reason != "slot_recreated" {
		t.Fatalf("OnReset(%q), want slot_recreated", reason)
	}
	waitStreaming(t, r.c)
	exec(t, conn, `UPDATE users SET name = 'after' WHERE id = $1`, user1)
	rec.waitTx(t, sets("users", "name", "after"))
}

// TestFastShutdownWithRetain: PostgreSQL's fast shutdown waits until each
// logical walsender's client confirms everything sent. A consumer whose
// confirmed position trails by Retain must still let it finish (it answers
// the shutdown's reply requests with everything handed off), and resumes
// afterwards.
func TestFastShutdownWithRetain(t *testing.T) {
	url, conn := koordiDB(t)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, Retain: time.Hour}, rec, discard)
	waitStreaming(t, r.c)
	exec(t, conn, `UPDATE users SET name = 'before' WHERE id = $1`, user1)
	rec.waitTx(t, sets("users", "name", "before"))

	// pg_ctl itself would wait 60 s; a shutdown held by the trailing
	// position would take wal_sender_timeout (60 s).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cluster.Restart(ctx, "fast"); err != nil {
		t.Fatalf("fast restart with a consumer retaining an hour: %v", err)
	}
	conn2 := dial(t, url)
	exec(t, conn2, `UPDATE users SET name = 'after' WHERE id = $1`, user1)
	rec.waitTx(t, sets("users", "name", "after"))
}

// failingBootstrap fails its first Bootstrap.
type failingBootstrap struct {
	*recorder
	calls atomic.Int32
}

func (f *failingBootstrap) Bootstrap(ctx context.Context, q derive.Querier) error {
	if f.calls.Add(1) == 1 {
		return errors.New("bootstrap failed on purpose")
	}
	return f.recorder.Bootstrap(ctx, q)
}

// TestBootstrapFailureDropsNewSlot: when the names state cannot be loaded in
// a new slot's snapshot, the slot is dropped and created again with a fresh
// snapshot, rather than kept with state that does not match it.
func TestBootstrapFailureDropsNewSlot(t *testing.T) {
	url, conn := koordiDB(t)
	d := &failingBootstrap{recorder: newRecorder()}
	var logs syncBuffer
	r := start(t, Config{ConnString: url, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, d, discard)
	waitStreaming(t, r.c)
	if n := strings.Count(logs.String(), `msg="replication slot created"`); n != 1 {
		t.Fatalf("slot created %d times after the failure, want once; log:\n%s", n, logs.String())
	}
	if n := d.calls.Load(); n != 2 {
		t.Fatalf("%d bootstraps, want 2 (one failed, one in the recreated slot's snapshot)", n)
	}
	if st := r.c.Status(); st.Reconnects != 1 || !strings.Contains(st.LastError, "bootstrap failed on purpose") {
		t.Fatalf("status %+v", st)
	}
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'A')`, user1)
	d.waitTx(t, sets("users", "name", "A"))
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
