package cdc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	ksql "github.com/koordi/koordi-realtime/sql"
)

// TestWalSenderTimeoutCapsStatus: with wal_sender_timeout shorter than two
// status intervals, PostgreSQL would ask for replies, and replies confirm
// everything handed off, past the replay window. The interval is capped at
// a quarter of the timeout the walsender uses, so the slot keeps trailing.
func TestWalSenderTimeoutCapsStatus(t *testing.T) {
	url, conn := koordiDB(t)
	db := url[strings.LastIndex(url, "/")+1:]
	db, _, _ = strings.Cut(db, "?")
	exec(t, conn, `ALTER DATABASE `+pgx.Identifier{db}.Sanitize()+` SET wal_sender_timeout = '2s'`)
	slot := slotFor(url)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, SlotName: slot, Retain: time.Hour, StatusInterval: 10 * time.Second}, rec, discard)
	waitStreaming(t, r.c)
	initial := slotConfirmed(t, conn, slot)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'A')`, user1)
	tx := rec.waitTx(t, sets("users", "name", "A"))
	waitFor(t, "hand-off", func() bool { return r.c.Status().HandedOffLSN > tx.CommitLSN })
	time.Sleep(3 * time.Second) // past wal_sender_timeout/2 several times over
	if got := slotConfirmed(t, conn, slot); got > initial || got >= tx.CommitLSN {
		t.Fatalf("confirmed %X moved from %X within the retain window (handed off %X): a reply request confirmed it", got, initial, tx.CommitLSN)
	}
	if st := r.c.Status(); !st.Streaming || st.Reconnects != 0 {
		t.Fatalf("the connection did not hold: %+v", st)
	}
}

// TestPublicationDroppedAndRecreated: a running consumer whose publication
// is dropped keeps running (it does not end as at a first start), retries
// with a growing backoff instead of every 100 ms, and once setup creates
// the publication again it streams past the gap on a new slot, reporting
// the gap to OnReset — PostgreSQL would otherwise look the publication up
// as of the slot's position, before its re-creation, forever.
func TestPublicationDroppedAndRecreated(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	resets := make(chan string, 4)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, SlotName: slot, OnReset: func(reason string) { resets <- reason }}, rec, discard)
	waitStreaming(t, r.c)
	if reason := waitReset(t, resets); reason != "slot_created" {
		t.Fatalf("first start: OnReset(%q)", reason)
	}
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'before')`, user1)
	rec.waitTx(t, sets("users", "name", "before"))

	exec(t, conn, `DROP PUBLICATION koordi_realtime`)
	exec(t, conn, `UPDATE users SET name = 'in the gap' WHERE id = $1`, user1) // decoding it fails
	waitFor(t, "the stream to fail", func() bool { return r.c.Status().Reconnects > 0 })
	before := r.c.Status().Reconnects
	time.Sleep(3 * time.Second)
	attempts := r.c.Status().Reconnects - before
	if attempts > 6 {
		t.Fatalf("%d reconnection attempts in 3 s: the backoff does not grow", attempts)
	}
	select {
	case err := <-r.result:
		t.Fatalf("Run ended on a publication dropped while running: %v", err)
	default:
	}
	if st := r.c.Status(); st.Streaming || !strings.Contains(st.LastError, "publication") {
		t.Fatalf("status while the publication is missing: %+v", st)
	}

	if err := ksql.Setup(context.Background(), conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	if reason := waitReset(t, resets); reason != "publication_recreated" {
		t.Fatalf("OnReset(%q), want publication_recreated", reason)
	}
	waitStreaming(t, r.c)
	exec(t, conn, `UPDATE users SET name = 'after' WHERE id = $1`, user1)
	rec.waitTx(t, sets("users", "name", "after"))
}

// TestConfigErrorAtFirstStartEndsRun: before the first stream, what the
// user must fix still ends Run with the error (serve exits 2 with it).
func TestConfigErrorAtFirstStartEndsRun(t *testing.T) {
	url, conn := koordiDB(t)
	exec(t, conn, `DROP PUBLICATION koordi_realtime`)
	c, err := New(Config{ConnString: url, SlotName: slotFor(url)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Run(ctx, discard); !errors.Is(err, ksql.ErrNoPublication) || !IsConfigError(err) {
		t.Fatalf("Run: %v, want ErrNoPublication", err)
	}
}

// TestBackoffGrowsWhenStreamsFailFast: a session that starts streaming and
// fails at once, again and again (here its walsender is terminated as soon
// as it appears), is retried with a growing backoff: only a session that
// streamed for a while resets it.
func TestBackoffGrowsWhenStreamsFailFast(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	r := start(t, Config{ConnString: url, SlotName: slot}, newRecorder(), discard)
	waitStreaming(t, r.c)
	before := r.c.Status().Reconnects
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		exec(t, conn, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		time.Sleep(20 * time.Millisecond)
	}
	if attempts := r.c.Status().Reconnects - before; attempts > 7 || attempts < 2 {
		t.Fatalf("%d reconnections in 3 s of sessions killed at once; want a few, with a growing backoff", attempts)
	}
	waitStreaming(t, r.c)
}

// TestTableLeavesPublication: a watched table taken out of the publication
// is reported (status, metric) while the stream goes on, and when it is back
// the gap is reported to OnReset: its changes in between were never streamed.
func TestTableLeavesPublication(t *testing.T) {
	url, conn := koordiDB(t)
	resets := make(chan string, 4)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, CheckInterval: 100 * time.Millisecond, Registerer: prometheus.NewRegistry(),
		OnReset: func(reason string) { resets <- reason }}, rec, discard)
	waitStreaming(t, r.c)
	waitReset(t, resets) // slot_created
	exec(t, conn, `ALTER PUBLICATION koordi_realtime DROP TABLE events`)
	waitFor(t, "the problem reported", func() bool {
		p := r.c.Status().Problems
		return len(p) == 1 && strings.Contains(p[0], "events")
	})
	if v := testutil.ToFloat64(r.c.m.tableProblems.WithLabelValues("events", "not_published")); v != 1 {
		t.Fatalf("koordi_replication_table_problems{events,not_published} = %v", v)
	}
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'still streamed')`, user1)
	rec.waitTx(t, sets("users", "name", "still streamed"))
	exec(t, conn, `ALTER PUBLICATION koordi_realtime ADD TABLE events`)
	if reason := waitReset(t, resets); reason != "publication_changed" {
		t.Fatalf("OnReset(%q), want publication_changed", reason)
	}
	waitStreaming(t, r.c)
	if p := r.c.Status().Problems; len(p) != 0 {
		t.Fatalf("problems after the repair: %v", p)
	}
	if v := testutil.ToFloat64(r.c.m.tableProblems.WithLabelValues("events", "not_published")); v != 0 {
		t.Fatalf("metric after the repair = %v", v)
	}
}

// TestReplicaIdentityDefaultKeepsStreaming: REPLICA IDENTITY DEFAULT set
// under a running consumer is reported, and a replication reconnect meanwhile
// streams on instead of ending Run (a first start refuses it).
func TestReplicaIdentityDefaultKeepsStreaming(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, SlotName: slot, CheckInterval: 100 * time.Millisecond}, rec, discard)
	waitStreaming(t, r.c)
	exec(t, conn, `ALTER TABLE event_calendar_memberships REPLICA IDENTITY DEFAULT`)
	waitFor(t, "the problem reported", func() bool {
		p := r.c.Status().Problems
		return len(p) == 1 && strings.Contains(p[0], "event_calendar_memberships")
	})
	before := r.c.Status().Reconnects
	exec(t, conn, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	waitFor(t, "a reconnect", func() bool { return r.c.Status().Reconnects > before })
	waitStreaming(t, r.c)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'after the reconnect')`, user1)
	rec.waitTx(t, sets("users", "name", "after the reconnect"))
	exec(t, conn, `ALTER TABLE event_calendar_memberships REPLICA IDENTITY FULL`)
	waitFor(t, "the problem mended", func() bool { return len(r.c.Status().Problems) == 0 })
}

// TestLeaderLock: of two consumers of one slot with the same LockKey, one
// streams and the other stands by; when the leader's session ends, its Run
// ends with ErrLostLeadership and the standby takes over, streaming what
// follows.
func TestLeaderLock(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	type cand struct {
		rec     *recorder
		leading chan bool
		r       *running
	}
	newCand := func() *cand {
		c := &cand{rec: newRecorder(), leading: make(chan bool, 10)}
		c.r = start(t, Config{ConnString: url, SlotName: slot, LockKey: 4242, WalSenderTimeout: time.Second,
			OnLeading: func(b bool) { c.leading <- b }}, c.rec, discard)
		return c
	}
	a := newCand()
	if !<-a.leading {
		t.Fatal("the first candidate did not lead")
	}
	waitStreaming(t, a.r.c)
	b := newCand()
	if <-b.leading {
		t.Fatal("the second candidate led while the first streams")
	}
	// The standby keeps asking on one replication connection rather than
	// starting a session (two backends) per try.
	standbyWalsender := func() []int {
		rows, err := conn.Query(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE backend_type = 'walsender' AND datname = current_database()
			  AND pid IS DISTINCT FROM (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1)`, slot)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	// Longer than wal_sender_timeout: an idle walsender in command mode
	// is not timed out, so the standby's connection outlives it.
	// And it holds nothing else: its regular connection was for the
	// checks before the wait (the leader, streaming, holds none either).
	others := func() int {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := standbyWalsender()
	for range 10 {
		time.Sleep(250 * time.Millisecond) // StandbyRetry is 500 ms
		if now := standbyWalsender(); len(first) != 1 || !slices.Equal(now, first) {
			t.Fatalf("the standby's walsenders went from %v to %v: one connection should stay", first, now)
		}
		if n := others(); n != 0 {
			t.Fatalf("%d regular connections besides the test's while one leads and one stands by, want 0", n)
		}
	}
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'one')`, user1)
	a.rec.waitTx(t, sets("users", "name", "one"))

	exec(t, conn, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	select {
	case err := <-a.r.result:
		a.r.result <- err
		if !errors.Is(err, ErrLostLeadership) {
			t.Fatalf("the old leader's Run: %v, want ErrLostLeadership", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the old leader kept running")
	}
	deadline := time.After(30 * time.Second)
	for took := false; !took; {
		select {
		case took = <-b.leading:
		case <-deadline:
			t.Fatal("the standby did not take over")
		}
	}
	exec(t, conn, `UPDATE users SET name = 'two' WHERE id = $1`, user1)
	b.rec.waitTx(t, sets("users", "name", "two"))
}

// TestTableProblemGaugeAcrossConsumers: a consumer after another on the
// same registry (a cluster node's next term) does not keep the gauge its
// predecessor set for a problem mended in between.
func TestTableProblemGaugeAcrossConsumers(t *testing.T) {
	url, conn := koordiDB(t)
	reg := prometheus.NewRegistry()
	cfg := Config{ConnString: url, CheckInterval: 100 * time.Millisecond, Registerer: reg}
	first := start(t, cfg, newRecorder(), discard)
	waitStreaming(t, first.c)
	exec(t, conn, `ALTER PUBLICATION koordi_realtime DROP TABLE events`)
	waitFor(t, "the problem reported", func() bool { return len(first.c.Status().Problems) == 1 })
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(first.c.m.tableProblems.WithLabelValues("events", "not_published")); v != 1 {
		t.Fatalf("gauge %v after the first consumer, want 1", v)
	}
	exec(t, conn, `ALTER PUBLICATION koordi_realtime ADD TABLE events`)
	next := start(t, cfg, newRecorder(), discard)
	waitStreaming(t, next.c)
	waitFor(t, "the gauge cleared by the next consumer's check", func() bool {
		return testutil.ToFloat64(next.c.m.tableProblems.WithLabelValues("events", "not_published")) == 0
	})
}

// TestStandbyOwesNoResync: a table out of the publication and back is
// reported once, by the leader; a standby that saw it too reports nothing
// when it takes over later (it reads its state afresh then).
func TestStandbyOwesNoResync(t *testing.T) {
	url, conn := koordiDB(t)
	slot := slotFor(url)
	newCand := func(resets chan string, leading chan bool) *running {
		return start(t, Config{ConnString: url, SlotName: slot, LockKey: 4343, WalSenderTimeout: time.Second,
			CheckInterval: 100 * time.Millisecond, Registerer: prometheus.NewRegistry(),
			OnReset:   func(r string) { resets <- r },
			OnLeading: func(b bool) { leading <- b }}, newRecorder(), discard)
	}
	leaderResets, standbyResets := make(chan string, 10), make(chan string, 10)
	leaderLeading, standbyLeading := make(chan bool, 10), make(chan bool, 10)
	a := newCand(leaderResets, leaderLeading)
	if !<-leaderLeading {
		t.Fatal("the first candidate did not lead")
	}
	waitStreaming(t, a.c)
	waitReset(t, leaderResets) // slot_created
	b := newCand(standbyResets, standbyLeading)
	if <-standbyLeading {
		t.Fatal("the second candidate led")
	}
	exec(t, conn, `ALTER PUBLICATION koordi_realtime DROP TABLE events`)
	waitFor(t, "both checkers see the problem", func() bool {
		return len(a.c.Status().Problems) == 1 && len(b.c.Status().Problems) == 1
	})
	exec(t, conn, `ALTER PUBLICATION koordi_realtime ADD TABLE events`)
	if reason := waitReset(t, leaderResets); reason != "publication_changed" {
		t.Fatalf("leader: OnReset(%q), want publication_changed", reason)
	}
	waitFor(t, "the standby sees it mended", func() bool { return len(b.c.Status().Problems) == 0 })
	exec(t, conn, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	deadline := time.After(30 * time.Second)
	for took := false; !took; {
		select {
		case took = <-standbyLeading:
		case <-deadline:
			t.Fatal("the standby did not take over")
		}
	}
	waitStreaming(t, b.c)
	select {
	case r := <-standbyResets:
		t.Fatalf("the new leader reported %q for a gap its predecessor reported", r)
	case <-time.After(3 * resyncSettle):
	}
}

// TestLookalikeTableIgnored: a table with a watched table's name in another
// schema, carried by the publication (as one FOR ALL TABLES carries what any
// role creates), is not Koordi's: its changes derive nothing.
func TestLookalikeTableIgnored(t *testing.T) {
	url, conn := koordiDB(t)
	exec(t, conn, `CREATE SCHEMA lookalike`)
	exec(t, conn, `CREATE TABLE lookalike.users (LIKE public.users INCLUDING ALL)`)
	exec(t, conn, `ALTER TABLE lookalike.users REPLICA IDENTITY FULL`)
	exec(t, conn, `ALTER PUBLICATION koordi_realtime ADD TABLE lookalike.users`)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, Registerer: prometheus.NewRegistry()}, rec, discard)
	waitStreaming(t, r.c)
	exec(t, conn, `INSERT INTO lookalike.users (id, email, name) VALUES ($1, 'x@example.com', 'forged')`, user1)
	exec(t, conn, `INSERT INTO public.users (id, email, name) VALUES ($1, 'a@example.com', 'real')`, user1)
	rec.waitTx(t, sets("users", "name", "real"))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, tx := range rec.txs {
		if sets("users", "name", "forged")(tx) {
			t.Fatal("a change of lookalike.users was taken for one of users")
		}
	}
}
