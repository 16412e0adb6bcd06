package derive_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

var (
	cluster *pgcluster.Cluster
	slotSeq atomic.Int64
)

// TestMain starts one PostgreSQL cluster for the package's database tests
// (each gets its own database) and fails the run on leaked goroutines.
func TestMain(m *testing.M) {
	pgcluster.TestMain(m, &cluster, func() error { return goleak.Find() })
}

// Fixed ids, so expected payloads are exact. render() prints them by name.
var ids = []struct{ name, id string }{
	{"U1", "a1000000-0000-4000-8000-000000000001"}, // Alice
	{"U2", "a1000000-0000-4000-8000-000000000002"}, // Bob
	{"U3", "a1000000-0000-4000-8000-000000000003"}, // Carol
	{"U4", "a1000000-0000-4000-8000-000000000004"}, // Dave, created later
	{"K1", "a9000000-0000-4000-8000-000000000001"}, // the child
	{"C1", "a2000000-0000-4000-8000-000000000001"}, // Soccer
	{"C2", "a2000000-0000-4000-8000-000000000002"}, // Piano
	{"M1", "a3000000-0000-4000-8000-000000000001"},
	{"M2", "a3000000-0000-4000-8000-000000000002"},
	{"M3", "a3000000-0000-4000-8000-000000000003"},
	{"M4", "a3000000-0000-4000-8000-000000000004"},
	{"M5", "a3000000-0000-4000-8000-000000000005"},
	{"M6", "a3000000-0000-4000-8000-000000000006"},
	{"E1", "a4000000-0000-4000-8000-000000000001"},
	{"E2", "a4000000-0000-4000-8000-000000000002"},
	{"E3", "a4000000-0000-4000-8000-000000000003"},
	{"E4", "a4000000-0000-4000-8000-000000000004"},
	{"E5", "a4000000-0000-4000-8000-000000000005"},
	{"E6", "a4000000-0000-4000-8000-000000000006"},
	{"E7", "a4000000-0000-4000-8000-000000000007"},
	{"F0", "af000000-0000-4000-8000-000000000000"}, // the fence room's user
}

// id returns the uuid of a name from ids.
func id(name string) string {
	for _, e := range ids {
		if e.name == name {
			return e.id
		}
	}
	panic("unknown id name " + name)
}

// sqlIDs replaces every {NAME} in s by the quoted uuid of NAME.
func sqlIDs(s string) string {
	for _, e := range ids {
		s = strings.ReplaceAll(s, "{"+e.name+"}", "'"+e.id+"'")
	}
	return s
}

// render prints an envelope as "room event data" with ids by name.
func render(e schema.Envelope) string {
	s := e.Room + " " + e.Event + " " + string(e.Data)
	for _, x := range ids {
		s = strings.ReplaceAll(s, x.id, x.name)
	}
	return s
}

// stream is a running consumer whose sink collects envelopes; fence()
// returns exactly what the statements run since the previous fence derived.
type stream struct {
	t     *testing.T
	conn  *pgx.Conn
	c     *cdc.Consumer
	txs   chan schema.Transaction
	fence int
}

const seedSQL = `
INSERT INTO users (id, email, name) VALUES
  ({U1}, 'alice@example.com', 'Alice'), ({U2}, 'bob@example.com', 'Bob'), ({U3}, 'carol@example.com', 'Carol');
INSERT INTO children (id, name) VALUES ({K1}, 'Mia');
INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES
  ({C1}, 'Soccer', 'https://example.com/soccer.ics', {K1}, {U1}),
  ({C2}, 'Piano', 'https://example.com/piano.ics', {K1}, {U1});
INSERT INTO event_calendar_memberships (id, event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id) VALUES
  ({M1}, {C1}, {U1}, 'alice@example.com', 't1', 'accepted', {U1}),
  ({M2}, {C1}, {U2}, 'bob@example.com', 't2', 'accepted', {U1}),
  ({M3}, {C2}, {U2}, 'bob@example.com', 't3', 'accepted', {U1});
`

// startStream creates a Koordi database with the seed rows, then starts a
// consumer on it (so the seed reaches the state through Bootstrap).
func startStream(t *testing.T) *stream {
	t.Helper()
	ctx := context.Background()
	url := pgcluster.NewDatabase(t, cluster)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, sqlIDs(seedSQL)); err != nil {
		t.Fatalf("seed: %v", err)
	}
	// Slots are cluster-wide: one per stream, dropped when the test ends.
	slot := fmt.Sprintf("derive_test_%d_%d", os.Getpid(), slotSeq.Add(1))
	c, err := cdc.New(cdc.Config{ConnString: url, SlotName: slot, StatusInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{t: t, conn: conn, c: c, txs: make(chan schema.Transaction, 1024)}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(runCtx, cdc.SinkFunc(func(ctx context.Context, tx schema.Transaction) error {
			select {
			case s.txs <- tx:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer Run: %v", err)
		}
		// The walsender may outlive the connection by a moment.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := conn.Exec(context.Background(),
				`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("drop slot %s: %v", slot, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	// Changes committed before the slot exists are not streamed: wait until
	// the consumer streams (it bootstraps the state first).
	deadline := time.Now().Add(30 * time.Second)
	for !c.Status().Streaming {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("consumer Run ended before streaming: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer not streaming after 30s: %+v", c.Status())
		}
	}
	return s
}

// exec runs SQL (with {NAME} ids) on the test connection.
func (s *stream) exec(t *testing.T, sql string) {
	t.Helper()
	if _, err := s.conn.Exec(context.Background(), sqlIDs(sql)); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// derived commits a fence emit and returns the rendered envelopes delivered
// before it, checking offsets on the way: consecutive within a transaction,
// increasing across transactions.
func (s *stream) derived(t *testing.T) []string {
	t.Helper()
	s.fence++
	s.exec(t, fmt.Sprintf(`SELECT koordi_realtime.emit('user:' || {F0}, 'fence', '{"n": %d}')`, s.fence))
	want := fmt.Sprintf(`{"n":%d}`, s.fence)
	var out []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case tx := <-s.txs:
			for i, e := range tx.Events {
				if e.Offset != (schema.Offset{LSN: tx.CommitLSN, Index: uint32(i)}) {
					t.Errorf("offset %v at index %d of commit %X", e.Offset, i, tx.CommitLSN)
				}
				if e.Event == "fence" && e.Room == "user:"+id("F0") {
					if string(e.Data) == want {
						return out
					}
					continue
				}
				out = append(out, render(e))
			}
		case <-timeout:
			t.Fatalf("timed out waiting for fence %d; derived so far:\n%s", s.fence, strings.Join(out, "\n"))
		}
	}
}

// expect runs the SQL statements (each in its own implicit transaction, or
// use BEGIN/COMMIT inside one string) and compares what they derive.
func (s *stream) expect(t *testing.T, sql string, want ...string) {
	t.Helper()
	s.exec(t, sql)
	got := s.derived(t)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("derived:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

const (
	assignedE1 = `"event_id":"E1","event_title":"Practice"`
	times      = `"start_time":"2026-11-28T09:30:00.000Z","end_time":"2026-11-28T11:00:00.000Z"`
)

// TestPostgresRules writes rows with SQL against a real PostgreSQL and
// asserts the exact envelopes the real consumer derives, for every rule of
// EVENTS.md. Subtests share one database and consumer and run in
// order; each builds on the rows of the previous ones.
func TestPostgresRules(t *testing.T) {
	s := startStream(t)
	insertEvent := func(name, cal, title, extra string) string {
		cols, vals := "", ""
		if extra != "" {
			kv := strings.SplitN(extra, "=", 2)
			cols, vals = ", "+kv[0], ", "+kv[1]
		}
		return fmt.Sprintf(`INSERT INTO events (id, event_calendar_id, ics_uid, title, location, start_time, end_time%s)
			VALUES ({%s}, {%s}, '%s', '%s', 'Field 3', '2026-11-28 09:30:00+00', '2026-11-28 11:00:00+00'%s)`,
			cols, name, cal, name, title, vals)
	}

	t.Run("bootstrap_from_snapshot", func(t *testing.T) {
		st := s.c.State()
		if !st.IsAcceptedMember(id("U2"), id("C1")) || !st.IsAcceptedMember(id("U2"), id("C2")) {
			t.Errorf("seeded memberships not in state: %v", st.AcceptedCalendars(id("U2")))
		}
		if st.IsAcceptedMember(id("U3"), id("C1")) {
			t.Error("U3 accepted in C1 before any membership")
		}
	})

	t.Run("rollback_produces_nothing", func(t *testing.T) {
		s.expect(t, `BEGIN;
			`+insertEvent("E7", "C1", "Never", "")+`;
			UPDATE event_calendars SET name = 'Never' WHERE id = {C1};
			SELECT koordi_realtime.emit('calendar:' || {C1}, 'never', '{}');
			ROLLBACK`)
	})

	t.Run("event_insert", func(t *testing.T) {
		s.expect(t, insertEvent("E1", "C1", "Practice", ""),
			`calendar:C1 event:created {"event_id":"E1","event_title":"Practice","event_calendar_id":"C1"}`)
		s.expect(t, insertEvent("E2", "C1", "Match", "assigned_to_user_id={U1}"),
			`calendar:C1 event:created {"event_id":"E2","event_title":"Match","event_calendar_id":"C1"}`,
			`calendar:C1 event:assigned {"event_id":"E2","event_title":"Match","assigned_to_user_id":"U1","previous_assigned_to_user_id":null,"is_skipped":false,`+times+`,"event_calendar_id":"C1"}`)
	})

	t.Run("bookkeeping_only_updates_produce_nothing", func(t *testing.T) {
		s.expect(t, `UPDATE events SET updated_at = now(), version = version + 1, sync_in_progress = true,
			last_modified = now(), location_lat = 52.5, ics_uid = ics_uid || '-x' WHERE id = {E1}`)
	})

	t.Run("assignment_and_details_in_one_update", func(t *testing.T) {
		s.expect(t, `UPDATE events SET assigned_to_user_id = {U2}, location = 'Field 4', version = version + 1 WHERE id = {E1}`,
			`calendar:C1 event:assigned {`+assignedE1+`,"assigned_to_user_id":"U2","previous_assigned_to_user_id":null,"is_skipped":false,`+times+`,"event_calendar_id":"C1"}`,
			`calendar:C1 event:updated {`+assignedE1+`,"event_calendar_id":"C1","changed":["location"]}`)
	})

	t.Run("skip_and_unassign", func(t *testing.T) {
		s.expect(t, `UPDATE events SET is_skipped = true WHERE id = {E1}`,
			`calendar:C1 event:assigned {`+assignedE1+`,"assigned_to_user_id":"U2","previous_assigned_to_user_id":"U2","is_skipped":true,`+times+`,"event_calendar_id":"C1"}`)
		s.expect(t, `UPDATE events SET assigned_to_user_id = NULL, is_skipped = false WHERE id = {E1}`,
			`calendar:C1 event:unassigned {`+assignedE1+`,"assigned_to_user_id":null,"previous_assigned_to_user_id":"U2","is_skipped":false,`+times+`,"event_calendar_id":"C1"}`)
	})

	t.Run("details", func(t *testing.T) {
		s.expect(t, `UPDATE events SET title = 'Practice!', description = 'Bring water', start_time = '2026-11-28 10:00:00+00',
			is_all_day = true, is_cancelled = true WHERE id = {E1};
			UPDATE events SET title = 'Practice', start_time = '2026-11-28 09:30:00+00', is_all_day = false, is_cancelled = false WHERE id = {E1}`,
			`calendar:C1 event:updated {"event_id":"E1","event_title":"Practice!","event_calendar_id":"C1","changed":["title","description","start_time","is_all_day","is_cancelled"]}`,
			`calendar:C1 event:updated {"event_id":"E1","event_title":"Practice","event_calendar_id":"C1","changed":["title","start_time","is_all_day","is_cancelled"]}`)
	})

	t.Run("event_moved_between_calendars", func(t *testing.T) {
		s.expect(t, `UPDATE events SET event_calendar_id = {C2} WHERE id = {E2}`,
			`calendar:C1 event:deleted {"event_id":"E2","event_title":"Match","event_calendar_id":"C1"}`,
			`calendar:C2 event:created {"event_id":"E2","event_title":"Match","event_calendar_id":"C2"}`)
	})

	t.Run("event_delete", func(t *testing.T) {
		s.expect(t, `DELETE FROM events WHERE id = {E2}`,
			`calendar:C2 event:deleted {"event_id":"E2","event_title":"Match","event_calendar_id":"C2"}`)
	})

	t.Run("toasted_description_assignment_only", func(t *testing.T) {
		// Random hex does not compress, so 16 KB is stored out of line and
		// an UPDATE that leaves it alone sends it as "unchanged TOAST".
		s.expect(t, insertEvent("E3", "C1", "Tournament",
			"description=(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 512))"),
			`calendar:C1 event:created {"event_id":"E3","event_title":"Tournament","event_calendar_id":"C1"}`)
		var toast string
		var chunks int
		ctx := context.Background()
		if err := s.conn.QueryRow(ctx, `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'events'::regclass`).Scan(&toast); err != nil {
			t.Fatal(err)
		}
		if err := s.conn.QueryRow(ctx, `SELECT count(*) FROM `+toast).Scan(&chunks); err != nil || chunks == 0 {
			t.Fatalf("description not stored out of line: %d chunks in %s (%v)", chunks, toast, err)
		}
		s.expect(t, `UPDATE events SET assigned_to_user_id = {U3} WHERE id = {E3}`,
			`calendar:C1 event:assigned {"event_id":"E3","event_title":"Tournament","assigned_to_user_id":"U3","previous_assigned_to_user_id":null,"is_skipped":false,`+times+`,"event_calendar_id":"C1"}`)
	})

	t.Run("memberships_and_invitations", func(t *testing.T) {
		s.expect(t, `INSERT INTO event_calendar_memberships (id, event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id)
			VALUES ({M4}, {C2}, {U3}, 'carol@example.com', 't4', 'accepted', {U1})`,
			`calendar:C2 member:added {"calendar_id":"C2","user_id":"U3","user_email":"carol@example.com","user_name":"Carol"}`)
		if !s.c.State().IsAcceptedMember(id("U3"), id("C2")) {
			t.Error("state: U3 not accepted in C2 after member:added")
		}
		// Nobody has this email yet: nothing.
		s.expect(t, `INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, invited_by_user_id)
			VALUES ({M5}, {C2}, 'dave@example.com', 't5', {U2})`)
		s.expect(t, `INSERT INTO users (id, email, name) VALUES ({U4}, 'dave@example.com', 'Dave');
			INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, invited_by_user_id)
			VALUES ({M6}, {C1}, 'dave@example.com', 't6', {U2})`,
			`user:U4 invitation:received {"calendar_id":"C1","calendar_name":"Soccer","inviter_name":"Bob","invited_email":"dave@example.com"}`)
		s.expect(t, `UPDATE event_calendar_memberships SET status = 'accepted', user_id = {U4}, responded_at = now() WHERE id = {M6}`,
			`calendar:C1 member:added {"calendar_id":"C1","user_id":"U4","user_email":"dave@example.com","user_name":"Dave"}`)
		s.expect(t, `UPDATE event_calendar_memberships SET status = 'declined' WHERE id = {M6}`,
			`calendar:C1 member:removed {"calendar_id":"C1","user_id":"U4","user_email":"dave@example.com","user_name":"Dave"}`,
			`user:U4 member:removed {"calendar_id":"C1","user_id":"U4","user_email":"dave@example.com","user_name":"Dave"}`)
		s.expect(t, `DELETE FROM event_calendar_memberships WHERE id IN ({M5}, {M6})`)
	})

	t.Run("renamed_and_removed_in_one_transaction", func(t *testing.T) {
		s.expect(t, `BEGIN;
			UPDATE users SET name = 'Robert', email = 'robert@example.com' WHERE id = {U2};
			DELETE FROM event_calendar_memberships WHERE id = {M2};
			COMMIT`,
			`calendar:C1 member:removed {"calendar_id":"C1","user_id":"U2","user_email":"robert@example.com","user_name":"Robert"}`,
			`user:U2 member:removed {"calendar_id":"C1","user_id":"U2","user_email":"robert@example.com","user_name":"Robert"}`)
		// The rename after the removal: still the name as of the commit.
		s.expect(t, `BEGIN;
			DELETE FROM event_calendar_memberships WHERE id = {M4};
			UPDATE users SET name = 'Caroline' WHERE id = {U3};
			COMMIT`,
			`calendar:C2 member:removed {"calendar_id":"C2","user_id":"U3","user_email":"carol@example.com","user_name":"Caroline"}`,
			`user:U3 member:removed {"calendar_id":"C2","user_id":"U3","user_email":"carol@example.com","user_name":"Caroline"}`)
		if s.c.State().IsAcceptedMember(id("U2"), id("C1")) {
			t.Error("state: U2 still accepted in C1")
		}
	})

	t.Run("calendar_updated", func(t *testing.T) {
		s.expect(t, `UPDATE event_calendars SET name = 'Piano Lessons', color = '#00FF00', updated_at = now() WHERE id = {C2}`,
			`calendar:C2 calendar:updated {"calendar_id":"C2","calendar_name":"Piano Lessons","changed":["name","color"]}`)
		s.expect(t, `UPDATE event_calendars SET updated_at = now() WHERE id = {C2}`)
	})

	t.Run("sync_window_counts", func(t *testing.T) {
		s.expect(t, `UPDATE event_calendars SET sync_in_progress = true WHERE id = {C1}`)
		s.expect(t, `BEGIN;
			`+insertEvent("E4", "C1", "Game 1", "")+`;
			`+insertEvent("E5", "C1", "Game 2", "")+`;
			`+insertEvent("E6", "C2", "Recital", "")+`;
			UPDATE events SET title = 'Practice (synced)' WHERE id = {E1};
			UPDATE events SET version = version + 1 WHERE id = {E3};
			COMMIT`,
			`calendar:C1 event:created {"event_id":"E4","event_title":"Game 1","event_calendar_id":"C1","sync":true}`,
			`calendar:C1 event:created {"event_id":"E5","event_title":"Game 2","event_calendar_id":"C1","sync":true}`,
			`calendar:C2 event:created {"event_id":"E6","event_title":"Recital","event_calendar_id":"C2"}`,
			`calendar:C1 event:updated {"event_id":"E1","event_title":"Practice (synced)","event_calendar_id":"C1","changed":["title"],"sync":true}`)
		s.expect(t, `DELETE FROM events WHERE id = {E5}`,
			`calendar:C1 event:deleted {"event_id":"E5","event_title":"Game 2","event_calendar_id":"C1","sync":true}`)
		s.expect(t, `UPDATE event_calendars SET sync_in_progress = false, last_sync_at = '2026-11-26 01:30:00+00',
			last_sync_status = 'success' WHERE id = {C1}`,
			`calendar:C1 calendar:synced {"calendar_id":"C1","calendar_name":"Soccer","events_created":2,"events_updated":1,"events_deleted":1}`)
		// Without a window: the counts of the same transaction.
		s.expect(t, `BEGIN;
			UPDATE events SET title = 'Recital (updated)' WHERE id = {E6};
			UPDATE event_calendars SET last_sync_at = '2026-11-26 01:40:00+00', last_sync_status = 'success' WHERE id = {C2};
			COMMIT`,
			`calendar:C2 event:updated {"event_id":"E6","event_title":"Recital (updated)","event_calendar_id":"C2","changed":["title"]}`,
			`calendar:C2 calendar:synced {"calendar_id":"C2","calendar_name":"Piano Lessons","events_created":0,"events_updated":1,"events_deleted":0}`)
		s.expect(t, `UPDATE event_calendars SET sync_in_progress = true WHERE id = {C2};
			UPDATE event_calendars SET sync_in_progress = false, last_sync_at = '2026-11-26 01:50:00+00',
			  last_sync_status = 'error', last_sync_error = 'ICS feed returned 404' WHERE id = {C2}`,
			`calendar:C2 calendar:sync_failed {"calendar_id":"C2","calendar_name":"Piano Lessons","error":"ICS feed returned 404"}`)
	})

	t.Run("conflict_resolved", func(t *testing.T) {
		const supp = `INSERT INTO supplemental_events (parent_event_id, type, title, start_time, end_time,
			origin_address, origin_lat, origin_lng, destination_address, destination_lat, destination_lng, drive_time_minutes)
			VALUES (%s, '%s', 'Drive', '2026-11-28 11:00:00+00', '2026-11-28 11:30:00+00', 'A', 1, 1, 'B', 2, 2, 30)`
		s.expect(t, fmt.Sprintf(supp, "{E1}", "return")+";"+fmt.Sprintf(supp, "{E6}", "departure")+";"+fmt.Sprintf(supp, "{E4}", "departure"))
		s.expect(t, `DELETE FROM supplemental_events WHERE (parent_event_id = {E1} AND type = 'return') OR (parent_event_id = {E6} AND type = 'departure')`,
			`calendar:C1 conflict:resolved {"event1_id":"E1","event2_id":"E6","reason":"same_location"}`,
			`calendar:C2 conflict:resolved {"event1_id":"E1","event2_id":"E6","reason":"same_location"}`)
		// Koordi's removeMember in one transaction: every trip of the
		// member's events deleted (E1 had only a return left, E4 only a
		// departure), the events reassigned. Nothing was resolved.
		s.expect(t, fmt.Sprintf(supp, "{E1}", "return"))
		if got := s.derived(t); len(got) != 0 {
			t.Fatalf("inserting a trip derived %q", got)
		}
		s.exec(t, `BEGIN;
			DELETE FROM supplemental_events WHERE parent_event_id IN ({E1}, {E4});
			UPDATE events SET assigned_to_user_id = {U2} WHERE id IN ({E1}, {E4});
			COMMIT`)
		got := s.derived(t)
		if len(got) == 0 || strings.Contains(strings.Join(got, "\n"), "conflict:resolved") {
			t.Errorf("a member's removal derived:\n  %s\nwant the reassignments alone", strings.Join(got, "\n  "))
		}
		s.exec(t, `UPDATE events SET assigned_to_user_id = NULL WHERE id IN ({E1}, {E4})`) // as the later subtests expect
		s.derived(t)
	})

	t.Run("conflict_resolved_across_transactions", func(t *testing.T) {
		// As Koordi writes trips: E1's return leaves Field 3 for home, E6's
		// departure leaves home for Field 3; resolve-conflict deletes them in
		// two autocommitted statements.
		const trip = `INSERT INTO supplemental_events (parent_event_id, type, title, start_time, end_time,
			origin_address, origin_lat, origin_lng, destination_address, destination_lat, destination_lng, drive_time_minutes)
			VALUES (%s, '%s', 'Drive', '2026-11-28 11:00:00+00', '2026-11-28 11:30:00+00', %s, 30)`
		const field3, home = `'Field 3', 39.8011, -89.6437`, `'12 Elm Street', 39.781725, -89.650148`
		s.expect(t, fmt.Sprintf(trip, "{E1}", "return", field3+", "+home)+";"+fmt.Sprintf(trip, "{E6}", "departure", home+", "+field3))
		s.exec(t, `DELETE FROM supplemental_events WHERE parent_event_id = {E1} AND type IN ('return')`)
		s.exec(t, `DELETE FROM supplemental_events WHERE parent_event_id = {E6} AND type IN ('departure')`)
		if got, want := s.derived(t), []string{
			`calendar:C1 conflict:resolved {"event1_id":"E1","event2_id":"E6","reason":"same_location"}`,
			`calendar:C2 conflict:resolved {"event1_id":"E1","event2_id":"E6","reason":"same_location"}`,
		}; strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("derived:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	})

	t.Run("emit", func(t *testing.T) {
		s.expect(t, `SELECT koordi_realtime.emit('calendar:' || {C1}, 'event:reminder', jsonb_build_object('event_id', {E1}::uuid, 'minutes', 15))`,
			// jsonb orders keys by length, then bytes.
			`calendar:C1 event:reminder {"minutes":15,"event_id":"E1"}`)
		s.expect(t, `BEGIN; SELECT koordi_realtime.emit('calendar:' || {C1}, 'rolled-back', '{}'); ROLLBACK`)
		s.expect(t, `SELECT koordi_realtime.emit('nowhere', 'x', '{}');
			SELECT koordi_realtime.emit('user:' || {U1}, 'connect', '{}');
			SELECT koordi_realtime.emit('user:' || {U1}, '', '{}')`)
		s.expect(t, `BEGIN;
			UPDATE events SET title = 'Practice' WHERE id = {E1};
			SELECT koordi_realtime.emit('user:' || {U1}, 'note', '"after the update"');
			COMMIT`,
			`calendar:C1 event:updated {"event_id":"E1","event_title":"Practice","event_calendar_id":"C1","changed":["title"]}`,
			`user:U1 note "after the update"`)
	})

	t.Run("alter_table_while_streaming", func(t *testing.T) {
		s.expect(t, `ALTER TABLE events ADD COLUMN priority integer;
			UPDATE events SET priority = 1 WHERE id = {E1}`)
		s.expect(t, `UPDATE events SET priority = 2, title = 'Practice (prio)' WHERE id = {E1}`,
			`calendar:C1 event:updated {"event_id":"E1","event_title":"Practice (prio)","event_calendar_id":"C1","changed":["title"]}`)
		s.expect(t, `ALTER TABLE events DROP COLUMN priority, DROP COLUMN location_lng, DROP COLUMN description;
			UPDATE events SET title = 'Practice', assigned_to_user_id = {U1} WHERE id = {E1}`,
			`calendar:C1 event:assigned {`+assignedE1+`,"assigned_to_user_id":"U1","previous_assigned_to_user_id":null,"is_skipped":false,`+times+`,"event_calendar_id":"C1"}`,
			`calendar:C1 event:updated {`+assignedE1+`,"event_calendar_id":"C1","changed":["title"]}`)
		s.expect(t, `ALTER TABLE users ADD COLUMN nickname text;
			UPDATE users SET nickname = 'Al', name = 'Alicia' WHERE id = {U1};
			`+insertEvent("E7", "C1", "Extra", ""),
			`calendar:C1 event:created {"event_id":"E7","event_title":"Extra","event_calendar_id":"C1"}`)
	})

	t.Run("calendar_delete_cascades_into_one_event", func(t *testing.T) {
		s.expect(t, `DELETE FROM event_calendars WHERE id = {C1}`,
			`calendar:C1 calendar:deleted {"calendar_id":"C1","calendar_name":"Soccer"}`)
		st := s.c.State()
		if st.IsAcceptedMember(id("U1"), id("C1")) {
			t.Error("state: U1 still accepted in the deleted calendar")
		}
		if got := st.AcceptedCalendars(id("U2")); len(got) != 1 || got[0] != id("C2") {
			t.Errorf("state: AcceptedCalendars(U2) = %v, want [C2]", got)
		}
	})

	t.Run("user_deleted_cascades_memberships", func(t *testing.T) {
		// Bob is the inviter of nothing left and a member of C2.
		s.expect(t, `DELETE FROM users WHERE id = {U2}`,
			`calendar:C2 member:removed {"calendar_id":"C2","user_id":"U2","user_email":"robert@example.com","user_name":"Robert"}`,
			`user:U2 member:removed {"calendar_id":"C2","user_id":"U2","user_email":"robert@example.com","user_name":"Robert"}`)
	})
}

// TestBootstrapRealSchema loads the state from a real database, with a
// column Koordi does not have yet, through a plain connection.
func TestBootstrapRealSchema(t *testing.T) {
	ctx := context.Background()
	url := pgcluster.NewDatabase(t, cluster)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, sqlIDs(seedSQL+`
		ALTER TABLE users ADD COLUMN nickname text;
		UPDATE event_calendars SET sync_in_progress = true WHERE id = {C2};
		INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time)
		VALUES ({E1}, {C1}, 'e1', 'Practice', now(), now())`)); err != nil {
		t.Fatal(err)
	}
	d := derive.New(derive.Config{})
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := d.Bootstrap(ctx, tx); err != nil {
		t.Fatal(err)
	}
	st := d.State()
	if got := st.AcceptedCalendars(id("U2")); strings.Join(got, ",") != id("C1")+","+id("C2") {
		t.Errorf("AcceptedCalendars(U2) = %v", got)
	}
	if !st.IsAcceptedMember(id("U1"), id("C1")) || st.IsAcceptedMember(id("U3"), id("C1")) {
		t.Error("membership state wrong")
	}
}
