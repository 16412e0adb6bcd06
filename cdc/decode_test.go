package cdc

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run go test -update and review the diff):\n--- got ---\n%s", path, got)
	}
}

const (
	user1 = "11111111-1111-4111-8111-111111111111"
	user2 = "22222222-2222-4222-8222-222222222222"
	child = "33333333-3333-4333-8333-333333333333"
	cal1  = "44444444-4444-4444-8444-444444444444"
	evt1  = "55555555-5555-4555-8555-555555555555"
	ts    = "2026-01-02 03:04:05.123456+00"
)

// seed writes a user, a child, a calendar and an event with explicit values
// in one transaction.
func seed(t *testing.T, exec func(sql string, args ...any)) {
	t.Helper()
	exec(`BEGIN`)
	exec(`INSERT INTO users (id, email, name, created_at, updated_at) VALUES ($1, 'ada@example.com', 'Ada', $2, $2)`, user1, ts)
	exec(`INSERT INTO users (id, email, name, created_at, updated_at) VALUES ($1, 'bob@example.com', 'Bob', $2, $2)`, user2, ts)
	exec(`INSERT INTO children (id, name, created_at, updated_at) VALUES ($1, 'Kid', $2, $2)`, child, ts)
	exec(`INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id, created_at, updated_at)
	      VALUES ($1, 'Soccer', 'https://example.com/a.ics', $2, $3, $4, $4)`, cal1, child, user1, ts)
	exec(`INSERT INTO events (id, event_calendar_id, ics_uid, title, location_lat, start_time, end_time, last_modified, created_at, updated_at)
	      VALUES ($1, $2, 'uid-1', 'Practice', 12.3456, $3, $3, $3, $3, $3)`, evt1, cal1, ts)
	exec(`COMMIT`)
}

// TestDecodeGolden streams a sequence of statements through a real slot and
// compares the decoded transactions with testdata/decode.golden: inserts,
// updates, ADD COLUMN and DROP COLUMN while streaming (rows follow the
// Relation messages by name), a rolled-back transaction (absent), emit
// (an insert into the emit table) beside bare logical messages (skipped,
// also with the service's prefix), a table that is published but not
// watched (skipped and counted), and a delete.
func TestDecodeGolden(t *testing.T) {
	url, conn := koordiDB(t)
	rec := newRecorder()
	// With a gap key, as a cluster node, so logical messages are streamed
	// and the decoder must skip those that are not gap records.
	r := start(t, Config{ConnString: url, GapKey: []byte("a gap key of thirty-two bytes!!!")}, rec, discard)
	waitStreaming(t, r.c) // the slot exists: every statement below is decoded

	run := func(sql string, args ...any) { exec(t, conn, sql, args...) }
	seed(t, run)
	run(`UPDATE events SET title = 'Renamed' WHERE id = $1`, evt1)
	run(`ALTER TABLE events ADD COLUMN colour text`)
	run(`UPDATE events SET colour = 'red', title = 'With colour' WHERE id = $1`, evt1)
	run(`ALTER TABLE events DROP COLUMN location_lat`)
	run(`UPDATE events SET title = 'Without lat' WHERE id = $1`, evt1)
	run(`BEGIN`)
	run(`UPDATE events SET title = 'Rolled back' WHERE id = $1`, evt1)
	run(`ROLLBACK`)
	run(`BEGIN`)
	run(`SELECT koordi_realtime.emit($1, 'custom:event', '{"a": 1}')`, "calendar:"+cal1)
	run(`SELECT pg_logical_emit_message(true, 'someone_else', 'ignored')`)
	run(`SELECT pg_logical_emit_message(false, 'koordi_realtime', 'not transactional')`)
	// Every role may write this: never an event, however well-formed.
	run(`SELECT pg_logical_emit_message(true, 'koordi_realtime', $1)`, `{"room": "calendar:`+cal1+`", "event": "forged", "data": {}}`)
	run(`UPDATE users SET name = 'Ada L' WHERE id = $1`, user1)
	run(`COMMIT`)
	run(`ALTER PUBLICATION koordi_realtime ADD TABLE children`)
	run(`UPDATE children SET name = 'Kiddo' WHERE id = $1`, child)
	run(`DELETE FROM events WHERE id = $1`, evt1)
	run(`UPDATE users SET name = 'marker' WHERE id = $1`, user2)
	rec.waitTx(t, sets("users", "name", "marker"))

	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	got := render(rec.txs)
	rec.mu.Unlock()
	golden(t, "decode.golden", got)
	if n := testutil.ToFloat64(r.c.m.skipped); n < 5 {
		t.Errorf("skipped changes = %v, want >= 5 (three logical messages, the emit row's delete, children)", n)
	}
}

// TestUnchangedToastTakenFromOldTuple updates only the assignee of an event
// whose description is TOASTed: pgoutput sends the description as
// "unchanged" and the decoded row must carry the old value, not NULL.
func TestUnchangedToastTakenFromOldTuple(t *testing.T) {
	url, conn := koordiDB(t)
	rec := newRecorder()
	r := start(t, Config{ConnString: url}, rec, discard)
	waitStreaming(t, r.c)
	run := func(sql string, args ...any) { exec(t, conn, sql, args...) }
	seed(t, run)
	// md5 hex of random numbers: 40 KB that pglz cannot shrink below the
	// TOAST threshold, so it is stored out of line.
	run(`UPDATE events SET description = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1250)) WHERE id = $1`, evt1)
	var desc string
	if err := conn.QueryRow(context.Background(), `SELECT description FROM events WHERE id = $1`, evt1).Scan(&desc); err != nil {
		t.Fatal(err)
	}
	run(`UPDATE events SET assigned_to_user_id = $1 WHERE id = $2`, user2, evt1)
	tx := rec.waitTx(t, sets("events", "assigned_to_user_id", user2))
	if len(tx.Changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(tx.Changes))
	}
	c := tx.Changes[0]
	if v := c.New.Get("description"); !v.Valid || v.Text != desc {
		t.Fatalf("new description: valid=%v len=%d, want the %d-byte original", v.Valid, len(v.Text), len(desc))
	}
	if c.Old.Get("description") != c.New.Get("description") {
		t.Fatal("old and new description differ for an assignment-only update")
	}
	requireToasted(t, conn)
}

func waitStreaming(t *testing.T, c *Consumer) {
	t.Helper()
	waitFor(t, "streaming", func() bool { return c.Status().Streaming })
}

// TestMessagesOffWithoutGapKey: a single node (no gap key) has pgoutput
// leave logical decoding messages out, so one of any size, which any role
// may write, never reaches the service: nothing is read, nothing skipped.
func TestMessagesOffWithoutGapKey(t *testing.T) {
	url, conn := koordiDB(t)
	rec := newRecorder()
	r := start(t, Config{ConnString: url}, rec, discard)
	waitStreaming(t, r.c)
	exec(t, conn, `SELECT pg_logical_emit_message(false, 'anyone', repeat('x', 8 << 20))`)
	exec(t, conn, `SELECT pg_logical_emit_message(true, 'koordi_realtime', 'transactional')`)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'marker')`, user1)
	rec.waitTx(t, sets("users", "name", "marker"))
	if n := testutil.ToFloat64(r.c.m.skipped); n != 0 {
		t.Fatalf("skipped = %v: logical messages were streamed", n)
	}
}
