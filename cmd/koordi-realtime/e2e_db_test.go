package main

// The database side of the process tests: each test's own database, the
// scenario seeded into it, and a writer committing while processes die.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// testDB is a test's own database in the package's cluster: a logical
// replication slot decodes one database, so tests never see each other's
// writes. conn is for seeding and writing; it does not survive a PostgreSQL
// restart.
type testDB struct {
	t    *testing.T
	url  string
	conn *pgx.Conn
}

// newTestDB creates a database with Koordi's tables made by the binary's
// migrate command. Seed it, then call setup: serve bootstraps what setup
// finds.
func newTestDB(t *testing.T) *testDB {
	t.Helper()
	url := pgcluster.NewDatabase(t, cluster)
	runCommand(t, map[string]string{"DATABASE_URL": url}, "migrate")
	return &testDB{t: t, url: url, conn: pgcluster.Connect(t, url)}
}

// setup runs the setup command (replica identity, publication, emit).
func (db *testDB) setup() {
	db.t.Helper()
	runCommand(db.t, map[string]string{"DATABASE_URL": db.url}, "setup")
}

// exec runs SQL on conn and fails the test on error.
func (db *testDB) exec(sql string, args ...any) {
	db.t.Helper()
	if _, err := db.conn.Exec(context.Background(), sql, args...); err != nil {
		db.t.Fatalf("%s: %v", sql, err)
	}
}

// currentLSN is the server's current WAL position.
func (db *testDB) currentLSN() uint64 {
	db.t.Helper()
	var lsn string
	if err := db.conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		db.t.Fatal(err)
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		db.t.Fatalf("parse LSN %q: %v", lsn, err)
	}
	return hi<<32 | lo
}

// slot names a replication slot after the database: slot names are
// cluster-wide, and tests run side by side.
func (db *testDB) slot(prefix string) string {
	name := db.url[strings.LastIndex(db.url, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	return prefix + "_" + name
}

// confirmedLSN is the slot's confirmed_flush_lsn: what the process told
// PostgreSQL it no longer needs.
func (db *testDB) confirmedLSN(slot string) uint64 {
	db.t.Helper()
	var lsn string
	if err := db.conn.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn); err != nil {
		db.t.Fatalf("slot %s: %v", slot, err)
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		db.t.Fatalf("confirmed_flush_lsn %q: %v", lsn, err)
	}
	return hi<<32 | lo
}

// dropSlot drops a slot once its process is gone: the package's cluster has
// a limited number (max_replication_slots), shared with the tests that run
// later. It connects anew, since conn may have died with a restart.
func (db *testDB) dropSlot(slot string) {
	t := db.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Errorf("drop slot %s: %v", slot, err)
		return
	}
	defer conn.Close(context.Background())
	for {
		// The WAL sender of a killed process may take a moment to notice.
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("drop slot %s: %v", slot, err)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fence is the explicit event (koordi_realtime.emit) the tests commit last
// to every user room: once a socket received it, every event committed
// before it has reached that socket or never will (one FIFO queue per
// socket, commit order).
const fence = "e2e:fence"

// emitFence emits fence number n to every given user room in one transaction.
func (db *testDB) emitFence(n int, userIDs ...string) {
	db.t.Helper()
	var sql strings.Builder
	sql.WriteString("BEGIN;")
	for _, u := range userIDs {
		fmt.Fprintf(&sql, "SELECT koordi_realtime.emit('user:%s', '%s', '{\"n\": %d}');", u, fence, n)
	}
	sql.WriteString("COMMIT;")
	db.exec(sql.String())
}

// Ids of the scenario most serve tests share.
const (
	adaID    = "a1000000-0000-4000-8000-000000000001"
	bobID    = "a1000000-0000-4000-8000-000000000002"
	cydID    = "a1000000-0000-4000-8000-000000000003"
	danID    = "a1000000-0000-4000-8000-000000000004"
	eveID    = "a1000000-0000-4000-8000-000000000005"
	kidID    = "b1000000-0000-4000-8000-000000000001"
	soccer   = "c1000000-0000-4000-8000-00000000000a" // ada (owner), bob
	piano    = "c1000000-0000-4000-8000-00000000000b" // cyd (owner), bob
	swim     = "c1000000-0000-4000-8000-00000000000c" // dan (owner)
	practice = "e1000000-0000-4000-8000-000000000001" // in Soccer
	lesson   = "e1000000-0000-4000-8000-000000000002" // in Piano
	evt10    = "e1000000-0000-4000-8000-000000000010"
	evt11    = "e1000000-0000-4000-8000-000000000011"
	evt12    = "e1000000-0000-4000-8000-000000000012"
	evt13    = "e1000000-0000-4000-8000-000000000013"
	evt14    = "e1000000-0000-4000-8000-000000000014"
)

const eventStart, eventEnd = "2026-12-01T10:00:00.000Z", "2026-12-01T11:00:00.000Z"

// emails are the scenario's users' addresses, which their tokens carry.
var emails = map[string]string{adaID: "ada@example.com", bobID: "bob@example.com", cydID: "cyd@example.com",
	danID: "dan@example.com", eveID: "eve@example.com"}

// token mints a token for user with the token command ("" as the email of a
// user outside the scenario).
func token(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	out := runCommand(t, map[string]string{"JWT_SECRET": testSecret},
		"token", "--user-id", user, "--email", emails[user], "--ttl", ttl.String())
	return strings.TrimSpace(out)
}

// seedScenario writes the scenario's users, calendars, memberships and
// events, with a conflict between Practice and Lesson (supplemental drives).
func (db *testDB) seedScenario() {
	db.t.Helper()
	ids := strings.NewReplacer("{ADA}", adaID, "{BOB}", bobID, "{CYD}", cydID, "{DAN}", danID, "{EVE}", eveID,
		"{KID}", kidID, "{A}", soccer, "{B}", piano, "{C}", swim)
	db.exec(ids.Replace(`
		INSERT INTO users (id, email, name) VALUES
		  ('{ADA}', 'ada@example.com', 'Ada'), ('{BOB}', 'bob@example.com', 'Bob'), ('{CYD}', 'cyd@example.com', 'Cyd'),
		  ('{DAN}', 'dan@example.com', 'Dan'), ('{EVE}', 'eve@example.com', 'Eve');
		INSERT INTO children (id, name) VALUES ('{KID}', 'Kid');
		INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES
		  ('{A}', 'Soccer', 'https://example.com/a.ics', '{KID}', '{ADA}'),
		  ('{B}', 'Piano', 'https://example.com/b.ics', '{KID}', '{CYD}'),
		  ('{C}', 'Swim', 'https://example.com/c.ics', '{KID}', '{DAN}');`))
	for _, m := range [][2]string{{soccer, adaID}, {soccer, bobID}, {piano, cydID}, {piano, bobID}, {swim, danID}} {
		db.exec(acceptedSQL(m[0], m[1], adaID))
	}
	db.exec(insertEventSQL(practice, soccer, "Practice", ""))
	db.exec(insertEventSQL(lesson, piano, "Lesson", ""))
	for _, s := range [][2]string{{practice, "return"}, {lesson, "departure"}} {
		db.exec(fmt.Sprintf(`INSERT INTO supplemental_events (parent_event_id, type, title, start_time, end_time,
			origin_address, origin_lat, origin_lng, destination_address, destination_lat, destination_lng, drive_time_minutes)
			VALUES ('%s', '%s', 'Drive', '2026-12-01 09:30:00+00', '2026-12-01 10:00:00+00', 'A', 1, 1, 'B', 2, 2, 30)`, s[0], s[1]))
	}
}

// acceptedSQL inserts an accepted membership; the invitation token and
// email are derived from the pair. SQL rather than exec, so that tests can
// put it in a transaction with other writes.
func acceptedSQL(cal, user, inviter string) string {
	return fmt.Sprintf(`INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id, responded_at)
		VALUES ('%s', '%s', (SELECT email FROM users WHERE id = '%[2]s'), 'tok-' || gen_random_uuid(), 'accepted', '%s', now())`, cal, user, inviter)
}

// insertEventSQL inserts an event from eventStart to eventEnd, assigned to
// assignee ("" for nobody).
func insertEventSQL(id, cal, title, assignee string) string {
	a := "NULL"
	if assignee != "" {
		a = "'" + assignee + "'"
	}
	return fmt.Sprintf(`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time, assigned_to_user_id)
		VALUES ('%s', '%s', 'uid-' || gen_random_uuid(), '%s', '%s', '%s', %s)`, id, cal, title, eventStart, eventEnd, a)
}

// writer commits `UPDATE events SET title = 'w-<i>'` for i = 0..n-1, one
// commit about every 10 ms, through serve's and PostgreSQL's restarts: a
// failed commit is retried on a new connection (so a title may be committed
// twice, with two offsets).
type writer struct {
	n     int
	count atomic.Int64 // commits done
	done  chan struct{}
	err   error
}

func startWriter(t *testing.T, db *testDB, eventID string, n int) *writer {
	t.Helper()
	w := &writer{n: n, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(w.done)
		w.err = w.run(ctx, db.url, eventID)
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func (w *writer) run(ctx context.Context, url, eventID string) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(2 * waitLimit)
	for i := 0; i < w.n; {
		if time.Now().After(deadline) {
			return fmt.Errorf("writer: stuck at commit %d", i)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				continue // PostgreSQL restarting
			}
			conn = c
		}
		if _, err := conn.Exec(ctx, `UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("w-%04d", i), eventID); err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		i++
		w.count.Store(int64(i))
	}
	return nil
}

// wait waits for the last commit.
func (w *writer) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(3 * waitLimit):
		t.Fatal("writer did not finish")
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
}

// waitLast waits until socket id received the writer's last commit.
func (w *writer) waitLast(c *testClients, id string) {
	c.t.Helper()
	last := fmt.Sprintf(`"w-%04d"`, w.n-1)
	c.waitEvent(id, last, func(ev socketEvent) bool {
		return ev.Event == schema.EventUpdated && strings.Contains(string(ev.Data), last)
	})
}

// check checks what socket id received of the writer's commits: every title
// at least once; each event either after every earlier one (offsets
// increasing) or an exact repeat (same offset, same title) of one received
// before. It returns how many repeats there were.
func (w *writer) check(c *testClients, id string) int {
	t := c.t
	t.Helper()
	seen := map[string]string{} // offset → title
	titles := map[string]bool{}
	var newest schema.Offset
	repeats := 0
	for _, ev := range c.events(id) {
		if ev.Event != schema.EventUpdated {
			continue
		}
		var p schema.EventChange
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			t.Fatal(err)
		}
		if ev.Offset.Compare(newest) <= 0 {
			if seen[ev.Raw] != p.EventTitle {
				t.Errorf("%s: %s %q after %s: out of order, and not a repeat of an event received before (%q)", id, ev.Raw, p.EventTitle, newest, seen[ev.Raw])
			}
			repeats++
			continue
		}
		newest = ev.Offset
		seen[ev.Raw] = p.EventTitle
		titles[p.EventTitle] = true
	}
	for i := 0; i < w.n; i++ {
		if title := fmt.Sprintf("w-%04d", i); !titles[title] {
			t.Errorf("%s never received commit %s", id, title)
		}
	}
	return repeats
}
