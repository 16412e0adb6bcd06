package cdc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// The statements Prisma 5.22 (Koordi's client) sends for the calls of
// supplementalEventService.ts, each autocommitted: a top-level deleteMany
// is one DELETE with no transaction around it, create one INSERT.
const (
	// deleteSupplementalEventsByType(eventId, [type])
	prismaDeleteByType = `DELETE FROM "public"."supplemental_events" WHERE ("public"."supplemental_events"."parent_event_id" = $1 AND "public"."supplemental_events"."type" IN ($2))`
	// deleteSupplementalEvents(eventId)
	prismaDeleteAll = `DELETE FROM "public"."supplemental_events" WHERE "public"."supplemental_events"."parent_event_id" = $1`
	// prisma.supplementalEvent.create in createSupplementalEvents
	prismaCreateTrip = `INSERT INTO "public"."supplemental_events" ("id","parent_event_id","type","title","start_time","end_time",` +
		`"origin_address","origin_lat","origin_lng","destination_address","destination_lat","destination_lng",` +
		`"drive_time_minutes","last_traffic_check","created_at","updated_at") ` +
		`VALUES (gen_random_uuid(),$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,now(),now(),now()) RETURNING "public"."supplemental_events"."id"`
	// assignEvent's optimistic update (sync_in_progress set), then its final one
	prismaAssign = `UPDATE "public"."events" SET "assigned_to_user_id" = $1, "is_skipped" = $2, "sync_in_progress" = $3, ` +
		`"version" = ("public"."events"."version" + $4), "updated_at" = $5 WHERE "public"."events"."id" = $6 RETURNING "public"."events"."id"`
	prismaSyncDone = `UPDATE "public"."events" SET "sync_in_progress" = $1, "updated_at" = $2 WHERE "public"."events"."id" = $3 RETURNING "public"."events"."id"`
)

// Places as Koordi writes them into trips: the assignee's home (users.home_*)
// and the events' locations (events.location, location_lat/lng).
type prismaPlace struct{ addr, lat, lng string }

var (
	adaHome = prismaPlace{"12 Elm Street, Springfield, IL 62704", "39.78172500", "-89.65014800"}
	field3  = prismaPlace{"Field 3, Riverside Park, Springfield", "39.80110000", "-89.64370000"}
	pool    = prismaPlace{"Aquatic Center, 1 Pool Rd, Springfield", "39.76000000", "-89.70000000"}
)

const (
	calSwim = "44444444-4444-4444-8444-444444444445"
	evtA    = "55555555-5555-4555-8555-55555555555a" // Soccer, 09:00-10:00 at Field 3
	evtB    = "55555555-5555-4555-8555-55555555555b" // Swim, 10:15-11:00 at Field 3
	evtC    = "55555555-5555-4555-8555-55555555555c" // Soccer, 14:00-15:00 at the pool
	fenceID = "66666666-6666-4666-8666-666666666666"
)

// prismaConflictDB is a database with Koordi's Prisma schema, two calendars
// (Soccer cal1, Swim calSwim) and three events assigned to Ada, A and B at
// the same field, C elsewhere with an early arrival, each with the trips
// createSupplementalEvents writes; and a consumer with the real rules.
type prismaConflictDB struct {
	t    *testing.T
	conn *pgx.Conn
	mu   sync.Mutex
	txs  []schema.Transaction
	n    int // fences
}

func newPrismaConflictDB(t *testing.T) *prismaConflictDB {
	ddl, err := os.ReadFile("../testdata/prisma_schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	url := pgcluster.NewDatabase(t, cluster)
	db := &prismaConflictDB{t: t, conn: dial(t, url)}
	exec(t, db.conn, string(ddl))
	if err := ksql.Setup(context.Background(), db.conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	exec(t, db.conn, `INSERT INTO "users" ("id", "email", "name", "home_address", "home_latitude", "home_longitude", "updated_at")
		VALUES ($1, 'ada@example.com', 'Ada Lovelace', $2, $3, $4, now())`, user1, adaHome.addr, adaHome.lat, adaHome.lng)
	exec(t, db.conn, `INSERT INTO "children" ("id", "name", "updated_at") VALUES ($1, 'Kid', now())`, child)
	exec(t, db.conn, `INSERT INTO "event_calendars" ("id", "name", "ics_url", "child_id", "owner_id", "updated_at")
		VALUES ($1, 'Soccer', 'https://example.com/a.ics', $3, $4, now()), ($2, 'Swim', 'https://example.com/b.ics', $3, $4, now())`,
		cal1, calSwim, child, user1)
	for _, e := range []struct {
		id, cal, title, start, end string
		at                         prismaPlace
	}{
		{evtA, cal1, "Soccer game", "2026-11-28 09:00:00+00", "2026-11-28 10:00:00+00", field3},
		{evtB, calSwim, "Swim practice", "2026-11-28 10:15:00+00", "2026-11-28 11:00:00+00", field3},
		{evtC, cal1, "Soccer training", "2026-11-28 14:00:00+00", "2026-11-28 15:00:00+00", pool},
	} {
		exec(t, db.conn, `INSERT INTO "events" ("id", "event_calendar_id", "ics_uid", "title", "location", "location_lat", "location_lng",
			"start_time", "end_time", "assigned_to_user_id", "updated_at") VALUES ($1, $2, $10, $3, $4, $5, $6, $7, $8, $9, now())`,
			e.id, e.cal, e.title, e.at.addr, e.at.lat, e.at.lng, e.start, e.end, user1, "ics-"+e.id)
	}
	r := start(t, Config{ConnString: url}, nil, SinkFunc(func(_ context.Context, tx schema.Transaction) error {
		db.mu.Lock()
		defer db.mu.Unlock()
		db.txs = append(db.txs, tx)
		return nil
	}))
	waitStreaming(t, r.c)
	db.createTrips(evtA, field3, false)
	db.createTrips(evtB, field3, false)
	db.createTrips(evtC, pool, true)
	if got := db.fence(); len(got) != 0 {
		t.Fatalf("creating trips derived %v", got)
	}
	return db
}

// createTrips runs createSupplementalEvents' inserts for an event at `at`
// assigned to Ada: departure, early arrival (only when the description
// gives an arrival time), return.
func (db *prismaConflictDB) createTrips(event string, at prismaPlace, early bool) {
	db.t.Helper()
	trip := func(typ, title string, from, to prismaPlace, minutes int) {
		exec(db.t, db.conn, prismaCreateTrip, event, typ, title, "2026-11-28 08:30:00+00", "2026-11-28 09:00:00+00",
			from.addr, from.lat, from.lng, to.addr, to.lat, to.lng, minutes)
	}
	trip("departure", "🚗 Ada to drive to event", adaHome, at, 25)
	if early {
		trip("early_arrival", "🌅 15 min early arrival", at, at, 0)
	}
	trip("return", "🚗 Ada to drive home", at, adaHome, 20)
}

// reassign runs assignEvent for an event (eventService.ts): the optimistic
// update with sync_in_progress set, handleEventReassignment's
// deleteSupplementalEvents and, when assigning, createSupplementalEvents,
// then the final update clearing sync_in_progress.
func (db *prismaConflictDB) reassign(event string, to *string, at prismaPlace, early bool) {
	db.t.Helper()
	exec(db.t, db.conn, prismaAssign, to, false, true, 1, time.Now(), event)
	exec(db.t, db.conn, prismaDeleteAll, event)
	if to != nil {
		db.createTrips(event, at, early)
	}
	exec(db.t, db.conn, prismaSyncDone, false, time.Now(), event)
}

// resolve runs resolve-conflict's two deleteSupplementalEventsByType calls
// (event.ts) and returns the WAL position between them.
func (db *prismaConflictDB) resolve(event1, event2 string) uint64 {
	db.t.Helper()
	exec(db.t, db.conn, prismaDeleteByType, event1, "return")
	var between string
	if err := db.conn.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&between); err != nil {
		db.t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(between)
	if err != nil {
		db.t.Fatal(err)
	}
	exec(db.t, db.conn, prismaDeleteByType, event2, "departure")
	return uint64(lsn)
}

// fence commits an emit and returns the transactions delivered before it
// since the previous fence, fences left out.
func (db *prismaConflictDB) fence() []schema.Transaction {
	db.t.Helper()
	db.n++
	exec(db.t, db.conn, `SELECT koordi_realtime.emit('user:' || $1::text, 'fence', jsonb_build_object('n', $2::int))`, fenceID, db.n)
	want := fmt.Sprintf(`{"n":%d}`, db.n)
	var out []schema.Transaction
	waitFor(db.t, "fence "+want, func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		for i, tx := range db.txs {
			if len(tx.Events) == 1 && tx.Events[0].Event == "fence" && string(tx.Events[0].Data) == want {
				for _, x := range db.txs[:i] {
					if x.Events[0].Event != "fence" {
						out = append(out, x)
					}
				}
				db.txs = db.txs[i+1:]
				return true
			}
		}
		return false
	})
	return out
}

// conflicts lists the conflict:resolved envelopes of txs as "room payload".
func conflicts(txs []schema.Transaction) []string {
	var out []string
	for _, tx := range txs {
		for _, e := range tx.Events {
			if e.Event == schema.ConflictResolved {
				out = append(out, e.Room+" "+string(e.Data))
			}
		}
	}
	return out
}

// assertOneResolution checks that txs hold exactly one derived resolution of
// (event1, event2): one transaction, committed after `after`, carrying only
// conflict:resolved to event1's calendar room, then event2's.
func assertOneResolution(t *testing.T, txs []schema.Transaction, after uint64, event1, cal1, event2, cal2 string) {
	t.Helper()
	payload := fmt.Sprintf(`{"event1_id":%q,"event2_id":%q,"reason":"same_location"}`, event1, event2)
	want := []string{schema.CalendarRoom(cal1) + " " + payload, schema.CalendarRoom(cal2) + " " + payload}
	if got := conflicts(txs); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("conflict:resolved derived:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, tx := range txs {
		if len(conflicts([]schema.Transaction{tx})) == 0 {
			continue
		}
		if len(tx.Events) != 2 {
			t.Errorf("the resolution's transaction carries %d events, want the 2 conflict:resolved", len(tx.Events))
		}
		if tx.CommitLSN <= after {
			t.Errorf("conflict:resolved came with commit %X, before the departures were deleted (after %X)", tx.CommitLSN, after)
		}
	}
}

// TestPrismaResolveConflict: Koordi's POST /api/events/resolve-conflict
// (same_location) deletes event1's return and event2's departure in two
// autocommitted statements; the real consumer derives one conflict:resolved
// per calendar, with the second transaction.
func TestPrismaResolveConflict(t *testing.T) {
	db := newPrismaConflictDB(t)
	between := db.resolve(evtA, evtB)
	assertOneResolution(t, db.fence(), between, evtA, cal1, evtB, calSwim)
	var left []string
	rows, err := db.conn.Query(context.Background(), `SELECT parent_event_id::text || ' ' || type FROM supplemental_events ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(left, ","); got != evtA+" departure,"+evtB+" return,"+evtC+" departure,"+evtC+" early_arrival,"+evtC+" return" {
		t.Fatalf("trips left: %s", got)
	}
}

// TestPrismaRegeneratedTripsPairNothing: what Koordi does when an event is
// reassigned, unassigned or skipped (assignEvent → handleEventReassignment:
// one deleteMany of all its trips, then one insert per new trip) derives no
// conflict:resolved — also for events whose earlier resolution left only a
// return (B) or only a departure (A), whose clean-ups look like the halves of
// a resolution, and for C's early arrival. A resolution afterwards still
// pairs.
func TestPrismaRegeneratedTripsPairNothing(t *testing.T) {
	db := newPrismaConflictDB(t)
	between := db.resolve(evtA, evtB)
	assertOneResolution(t, db.fence(), between, evtA, cal1, evtB, calSwim)

	bob := user2
	exec(t, db.conn, `INSERT INTO "users" ("id", "email", "name", "home_address", "home_latitude", "home_longitude", "updated_at")
		VALUES ($1, 'bob@example.com', 'Bob', $2, $3, $4, now())`, bob, adaHome.addr, adaHome.lat, adaHome.lng)
	ada := user1
	db.reassign(evtB, &ada, field3, false) // B's trips: return only → all three again
	db.reassign(evtA, &ada, field3, false) // A's trips: departure only → all three again
	db.reassign(evtC, &bob, pool, true)    // departure, early arrival, return → again
	db.reassign(evtB, nil, field3, false)  // unassigned: deleted, none created
	db.reassign(evtB, &ada, field3, false)
	if got := conflicts(db.fence()); len(got) != 0 {
		t.Fatalf("regenerating trips derived conflict:resolved:\n  %s", strings.Join(got, "\n  "))
	}

	between = db.resolve(evtA, evtB)
	assertOneResolution(t, db.fence(), between, evtA, cal1, evtB, calSwim)
}
