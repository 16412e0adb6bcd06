package derive

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/koordi/koordi-realtime/cdc/wal"
)

// Fixed ids so golden files are stable. The digit after the first group
// tells the kind: 1 users, 2 calendars, 3 memberships, 4 events, 5 supplementals.
func tid(kind, n int) string { return fmt.Sprintf("%08d-0000-4000-8000-%012d", kind, n) }

var (
	U1, U2, U3, U4 = tid(1, 1), tid(1, 2), tid(1, 3), tid(1, 4)
	C1, C2, C3     = tid(2, 1), tid(2, 2), tid(2, 3)
	M1, M2, M3, M4 = tid(3, 1), tid(3, 2), tid(3, 3), tid(3, 4)
	E1, E2, E3, E4 = tid(4, 1), tid(4, 2), tid(4, 3), tid(4, 4)
	S1, S2, S3     = tid(5, 1), tid(5, 2), tid(5, 3)
)

// null marks a NULL value in row().
const null = "\x00NULL"

// row builds a wal.Row from column/value pairs.
func row(kv ...string) wal.Row {
	m := make(map[string]wal.Value, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == null {
			m[kv[i]] = wal.Value{}
		} else {
			m[kv[i]] = wal.Value{Text: kv[i+1], Valid: true}
		}
	}
	return wal.RowOf(m)
}

// mapOf is r's columns and values.
func mapOf(r wal.Row) map[string]wal.Value { return maps.Collect(r.All()) }

// with returns a copy of r with the pairs set (null deletes nothing; use
// without to drop a column).
func with(r wal.Row, kv ...string) wal.Row {
	c := mapOf(r)
	maps.Copy(c, mapOf(row(kv...)))
	return wal.RowOf(c)
}

func without(r wal.Row, cols ...string) wal.Row {
	c := mapOf(r)
	for _, col := range cols {
		delete(c, col)
	}
	return wal.RowOf(c)
}

func eventRow(id, cal, title string, kv ...string) wal.Row {
	r := row(
		"id", id, "event_calendar_id", cal, "ics_uid", "uid-"+id[len(id)-2:], "title", title,
		"description", null, "location", "Field 3", "location_lat", null, "location_lng", null,
		"start_time", "2026-11-28 09:30:00+00", "end_time", "2026-11-28 11:00:00+00",
		"is_all_day", "f", "is_skipped", "f", "is_cancelled", "f", "assigned_to_user_id", null,
		"sync_in_progress", "f", "version", "1", "last_modified", "2026-11-26 01:00:00+00",
		"created_at", "2026-11-26 01:00:00+00", "updated_at", "2026-11-26 01:00:00+00",
	)
	return with(r, kv...)
}

func calendarRow(id, name string, kv ...string) wal.Row {
	r := row(
		"id", id, "name", name, "ics_url", "https://example.com/"+name+".ics", "child_id", tid(9, 1),
		"owner_id", U1, "color", "#3B82F6", "sync_enabled", "t", "sync_in_progress", "f",
		"last_sync_at", null, "last_sync_status", "pending", "last_sync_error", null,
		"created_at", "2026-11-26 01:00:00+00", "updated_at", "2026-11-26 01:00:00+00",
	)
	return with(r, kv...)
}

func memberRowOf(id, cal, user, email, status string, kv ...string) wal.Row {
	r := row(
		"id", id, "event_calendar_id", cal, "user_id", user, "invited_email", email,
		"invitation_token", "tok-"+id, "status", status, "invited_by_user_id", U1,
		"invited_at", "2026-11-26 01:00:00+00", "responded_at", null, "expires_at", null,
		"created_at", "2026-11-26 01:00:00+00", "updated_at", "2026-11-26 01:00:00+00",
	)
	return with(r, kv...)
}

func userRow(id, name, email string) wal.Row {
	return row("id", id, "name", name, "email", email, "avatar_url", null, "timezone", "Europe/Berlin",
		"created_at", "2026-11-26 01:00:00+00", "updated_at", "2026-11-26 01:00:00+00")
}

func suppRow(id, parent, typ string) wal.Row {
	return row("id", id, "parent_event_id", parent, "type", typ, "title", "Drive",
		"start_time", "2026-11-28 09:00:00+00", "end_time", "2026-11-28 09:30:00+00",
		"drive_time_minutes", "30")
}

// loc is a place as Koordi stores it in a trip row: the address text and
// decimal(10,8) / decimal(11,8) coordinates.
type loc struct{ addr, lat, lng string }

// Places of the trip rows below: the assignee's home and event locations.
var (
	home   = loc{"12 Elm Street, Springfield, IL 62704", "39.78172500", "-89.65014800"}
	field3 = loc{"Field 3, Riverside Park, Springfield", "39.80110000", "-89.64370000"}
	gym    = loc{"Lincoln Gym, 300 Oak Ave, Springfield", "39.79000000", "-89.61000000"}
)

// trip is a supplemental_events row as Koordi's createSupplementalEvents
// writes it for an event at `at` and an assignee living at `from`:
// a departure goes from home to the event, an early_arrival stays at the
// event, a return goes from the event back home.
func trip(id, parent, typ string, at, from loc) wal.Row {
	origin, dest := at, from // return
	switch typ {
	case "departure":
		origin, dest = from, at
	case "early_arrival":
		origin, dest = at, at
	}
	return row("id", id, "parent_event_id", parent, "type", typ, "title", "🚗 Alice to drive",
		"start_time", "2026-11-28 09:00:00+00", "end_time", "2026-11-28 09:30:00+00",
		"origin_address", origin.addr, "origin_lat", origin.lat, "origin_lng", origin.lng,
		"destination_address", dest.addr, "destination_lat", dest.lat, "destination_lng", dest.lng,
		"drive_time_minutes", "30", "last_traffic_check", "2026-11-26 01:00:00+00",
		"created_at", "2026-11-26 01:00:00+00", "updated_at", "2026-11-26 01:00:00+00")
}

func ins(table string, r wal.Row) wal.Change {
	return wal.Change{Op: wal.OpInsert, Table: table, New: r}
}

// upd and del build changes as REPLICA IDENTITY FULL sends them (the whole
// old row); updKey and delKey as a key identity does (no old row for an
// update, the key only for a delete).
func upd(table string, o, n wal.Row) wal.Change {
	return wal.Change{Op: wal.OpUpdate, Table: table, Old: o, New: n, OldFull: !o.IsZero()}
}
func del(table string, r wal.Row) wal.Change {
	return wal.Change{Op: wal.OpDelete, Table: table, Old: r, OldFull: true}
}
func updKey(table string, n wal.Row) wal.Change {
	return wal.Change{Op: wal.OpUpdate, Table: table, New: n}
}
func delKey(table string, id string) wal.Change {
	return wal.Change{Op: wal.OpDelete, Table: table, Old: row("id", id)}
}
func msg(s string) wal.Change { return wal.Change{Op: wal.OpMessage, Message: []byte(s)} }

// fakeQuerier answers the bootstrap queries from fixed rows, picking the
// table from the query's FROM clause.
type fakeQuerier struct {
	tables map[string][][]*string
	err    error
}

func (f *fakeQuerier) Query(_ context.Context, sql string, _ ...any) (pgx.Rows, error) {
	if f.err != nil {
		return nil, f.err
	}
	i := strings.LastIndex(sql, " FROM ")
	return &fakeRows{rows: f.tables[strings.TrimSpace(sql[i+6:])]}, nil
}

type fakeRows struct {
	rows [][]*string
	i    int
	cur  [][]byte
}

func (r *fakeRows) Close()                                       {}
func (r *fakeRows) Err() error                                   { return nil }
func (r *fakeRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r *fakeRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r *fakeRows) Scan(...any) error                            { return fmt.Errorf("fakeRows: Scan unsupported") }
func (r *fakeRows) Values() ([]any, error)                       { return nil, fmt.Errorf("fakeRows: Values unsupported") }
func (r *fakeRows) RawValues() [][]byte                          { return r.cur }
func (r *fakeRows) Conn() *pgx.Conn                              { return nil }
func (r *fakeRows) TypeMap() *pgtype.Map                         { return nil }
func (r *fakeRows) Next() bool {
	if r.i >= len(r.rows) {
		return false
	}
	r.cur = r.cur[:0]
	for _, v := range r.rows[r.i] {
		if v == nil {
			r.cur = append(r.cur, nil)
		} else {
			r.cur = append(r.cur, []byte(*v))
		}
	}
	r.i++
	return true
}

func sp(s string) *string { return &s }

// baseState is the world every table test starts from:
// users Alice (U1), Bob (U2), Carol (U3); calendars Soccer (C1) and Piano (C2);
// Alice and Bob accepted in Soccer (M1, M2), Bob accepted in Piano (M3);
// events E1 in Soccer, E2 in Piano.
func baseQuerier() *fakeQuerier {
	return &fakeQuerier{tables: map[string][][]*string{
		"users": {
			{sp(U1), sp("Alice"), sp("alice@example.com")},
			{sp(U2), sp("Bob"), sp("bob@example.com")},
			{sp(U3), sp("Carol"), sp("Carol@Example.com")},
		},
		"event_calendars": {
			{sp(C1), sp("Soccer"), sp("false")},
			{sp(C2), sp("Piano"), sp("false")},
		},
		"event_calendar_memberships": {
			{sp(M1), sp(C1), sp(U1), sp("accepted")},
			{sp(M2), sp(C1), sp(U2), sp("accepted")},
			{sp(M3), sp(C2), sp(U2), sp("accepted")},
		},
		"events": {
			{sp(E1), sp(C1)},
			{sp(E2), sp(C2)},
		},
	}}
}
