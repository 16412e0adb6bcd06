package main

// End-to-end tests of `koordi-realtime serve` (issue 4): the real binary as a
// subprocess, real PostgreSQL (the package's cluster), the real
// socket.io-client in Node (testdata/e2e/clients.mjs). Every test prepares
// its database with the binary's migrate and setup commands and mints its
// tokens with the token command.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/schema"
)

// Ids of the end-to-end scenario.
const (
	e2eAda   = "a1000000-0000-4000-8000-000000000001"
	e2eBob   = "a1000000-0000-4000-8000-000000000002"
	e2eCyd   = "a1000000-0000-4000-8000-000000000003"
	e2eDan   = "a1000000-0000-4000-8000-000000000004"
	e2eEve   = "a1000000-0000-4000-8000-000000000005"
	e2eKid   = "b1000000-0000-4000-8000-000000000001"
	e2eCalA  = "c1000000-0000-4000-8000-00000000000a" // Soccer: ada (owner), bob
	e2eCalB  = "c1000000-0000-4000-8000-00000000000b" // Piano: cyd (owner), bob
	e2eCalC  = "c1000000-0000-4000-8000-00000000000c" // Swim: dan (owner)
	e2eEvt1  = "e1000000-0000-4000-8000-000000000001" // Practice, in A
	e2eEvt2  = "e1000000-0000-4000-8000-000000000002" // Lesson, in B
	e2eEvt10 = "e1000000-0000-4000-8000-000000000010"
	e2eEvt11 = "e1000000-0000-4000-8000-000000000011"
	e2eEvt12 = "e1000000-0000-4000-8000-000000000012"
	e2eEvt13 = "e1000000-0000-4000-8000-000000000013"
	e2eEvt14 = "e1000000-0000-4000-8000-000000000014"
)

const e2eStart, e2eEnd = "2026-12-01T10:00:00.000Z", "2026-12-01T11:00:00.000Z"

// e2eSeed writes the scenario's users, calendars, memberships and events
// (before setup and serve: the service bootstraps them).
func e2eSeed(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ids := strings.NewReplacer("{ADA}", e2eAda, "{BOB}", e2eBob, "{CYD}", e2eCyd, "{DAN}", e2eDan, "{EVE}", e2eEve,
		"{KID}", e2eKid, "{A}", e2eCalA, "{B}", e2eCalB, "{C}", e2eCalC)
	e2eExec(t, conn, ids.Replace(`
		INSERT INTO users (id, email, name) VALUES
		  ('{ADA}', 'ada@example.com', 'Ada'), ('{BOB}', 'bob@example.com', 'Bob'), ('{CYD}', 'cyd@example.com', 'Cyd'),
		  ('{DAN}', 'dan@example.com', 'Dan'), ('{EVE}', 'eve@example.com', 'Eve');
		INSERT INTO children (id, name) VALUES ('{KID}', 'Kid');
		INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES
		  ('{A}', 'Soccer', 'https://example.com/a.ics', '{KID}', '{ADA}'),
		  ('{B}', 'Piano', 'https://example.com/b.ics', '{KID}', '{CYD}'),
		  ('{C}', 'Swim', 'https://example.com/c.ics', '{KID}', '{DAN}');`))
	for _, m := range [][2]string{{e2eCalA, e2eAda}, {e2eCalA, e2eBob}, {e2eCalB, e2eCyd}, {e2eCalB, e2eBob}, {e2eCalC, e2eDan}} {
		e2eExec(t, conn, e2eAcceptedSQL(m[0], m[1], e2eAda))
	}
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt1, e2eCalA, "Practice", ""))
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt2, e2eCalB, "Lesson", ""))
	for _, s := range [][2]string{{e2eEvt1, "return"}, {e2eEvt2, "departure"}} {
		e2eExec(t, conn, fmt.Sprintf(`INSERT INTO supplemental_events (parent_event_id, type, title, start_time, end_time,
			origin_address, origin_lat, origin_lng, destination_address, destination_lat, destination_lng, drive_time_minutes)
			VALUES ('%s', '%s', 'Drive', '2026-12-01 09:30:00+00', '2026-12-01 10:00:00+00', 'A', 1, 1, 'B', 2, 2, 30)`, s[0], s[1]))
	}
}

// e2eAcceptedSQL inserts an accepted membership; the invitation token and
// email are derived from the pair.
func e2eAcceptedSQL(cal, user, inviter string) string {
	return fmt.Sprintf(`INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id, responded_at)
		VALUES ('%s', '%s', (SELECT email FROM users WHERE id = '%[2]s'), 'tok-' || gen_random_uuid(), 'accepted', '%s', now())`, cal, user, inviter)
}

func e2eInsertEventSQL(id, cal, title, assignee string) string {
	a := "NULL"
	if assignee != "" {
		a = "'" + assignee + "'"
	}
	return fmt.Sprintf(`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time, assigned_to_user_id)
		VALUES ('%s', '%s', 'uid-' || gen_random_uuid(), '%s', '%s', '%s', %s)`, id, cal, title, e2eStart, e2eEnd, a)
}

// e2eWant is one event a socket must receive; key names it across sockets
// (every socket receiving the same key must see the same offset).
type e2eWant struct {
	key    string
	event  string
	fields map[string]any
}

// e2eExpect collects, per socket, the exact sequence it must receive.
type e2eExpect struct {
	want map[string][]e2eWant
	n    int
}

func (x *e2eExpect) to(sockets []string, event string, fields map[string]any) {
	x.n++
	for _, s := range sockets {
		x.want[s] = append(x.want[s], e2eWant{key: fmt.Sprintf("#%d %s", x.n, event), event: event, fields: fields})
	}
}

// check compares what every socket received with what it must have, exactly:
// same events, same order, payload fields equal, offsets increasing, and one
// offset per event across sockets.
func (x *e2eExpect) check(t *testing.T, c *e2eClients) {
	t.Helper()
	offsets := map[string]string{}
	ids := make([]string, 0, len(x.want))
	for id := range x.want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		want, got := x.want[id], c.events(id)
		var prev schema.Offset
		for _, ev := range got {
			if ev.Offset.Compare(prev) <= 0 {
				t.Errorf("%s: offset %s after %s", id, ev.Raw, prev)
			}
			prev = ev.Offset
		}
		// Up to the first discrepancy: what follows it would only repeat it.
		for i := 0; i < max(len(got), len(want)); i++ {
			if i >= len(got) {
				t.Errorf("%s: missing %s %v (and %d more)", id, want[i].key, want[i].fields, len(want)-i-1)
				break
			}
			if i >= len(want) {
				t.Errorf("%s: unexpected %s %s at %s (and %d more)", id, got[i].Event, got[i].Data, got[i].Raw, len(got)-i-1)
				break
			}
			if got[i].Event != want[i].event {
				t.Errorf("%s: event %d is %s %s, want %s %v", id, i, got[i].Event, got[i].Data, want[i].key, want[i].fields)
				break
			}
			if err := e2eSubset(got[i].Data, want[i].fields); err != nil {
				t.Errorf("%s: %s: %v", id, want[i].key, err)
			}
			if o, ok := offsets[want[i].key]; ok && o != got[i].Raw {
				t.Errorf("%s: %s has offset %s, another socket got %s", id, want[i].key, got[i].Raw, o)
			}
			offsets[want[i].key] = got[i].Raw
		}
	}
}

// TestServeEndToEnd runs the scenario of issue 4: five users in three
// calendars, sockets over websocket, polling and polling-with-upgrade, and
// SQL writes of every kind of DESIGN.md section 4; every socket must receive
// exactly its events with the right payloads, in commit order. Along the way:
// a membership accepted mid-stream adds the member's sockets to the room
// without join:calendar; a removed member gets nothing of the calendar after
// the removal, neither from the same transaction nor from the next commit; a
// deleted calendar sends nothing after calendar:deleted; join:calendar is
// checked against the current state; a token that expires closes its socket
// and the reconnect is refused with "Authentication error: token expired".
func TestServeEndToEnd(t *testing.T) {
	url, conn := e2eDatabase(t)
	e2eSeed(t, conn)
	e2eSetup(t, url)
	srv := startE2EServer(t, url)
	c := startE2EClients(t, srv.url())

	// Sockets: ada has two (one per transport), the others one each.
	const adaWS, adaPoll, bob, cyd, dan, eve = "ada-ws", "ada-poll", "bob", "cyd", "dan", "eve"
	users := map[string][2]string{
		adaWS: {e2eAda, "ada@example.com"}, adaPoll: {e2eAda, "ada@example.com"}, bob: {e2eBob, "bob@example.com"},
		cyd: {e2eCyd, "cyd@example.com"}, dan: {e2eDan, "dan@example.com"}, eve: {e2eEve, "eve@example.com"},
	}
	transports := map[string][]string{
		adaWS: {"websocket"}, adaPoll: {"polling"}, bob: nil, cyd: {"websocket"}, dan: {"polling"}, eve: nil,
	}
	for _, id := range []string{adaWS, adaPoll, bob, cyd, dan, eve} {
		u := users[id]
		r := c.connect(id, e2eToken(t, u[0], u[1], time.Hour), transports[id]...)
		if r.Recovered || r.PID == "" {
			t.Fatalf("%s: first connect %+v: want a pid and recovered false", id, r)
		}
	}
	// A short-lived token: its socket is closed when it expires, whatever
	// the transport.
	expiring := e2eToken(t, e2eCyd, "cyd@example.com", 3*time.Second)
	c.connect("exp-ws", expiring, "websocket")
	c.connect("exp-poll", expiring, "polling")

	x := &e2eExpect{want: map[string][]e2eWant{}}
	calA := []string{adaWS, adaPoll, bob}
	calB := []string{cyd, bob}
	calC := []string{dan}
	assignment := func(assignee, prev string, skipped bool, cal string) map[string]any {
		f := map[string]any{"event_id": e2eEvt10, "assigned_to_user_id": nil, "previous_assigned_to_user_id": nil,
			"is_skipped": skipped, "start_time": e2eStart, "end_time": e2eEnd, "event_calendar_id": cal}
		if assignee != "" {
			f["assigned_to_user_id"] = assignee
		}
		if prev != "" {
			f["previous_assigned_to_user_id"] = prev
		}
		return f
	}
	ref := func(id, title, cal string) map[string]any {
		return map[string]any{"event_id": id, "event_title": title, "event_calendar_id": cal}
	}
	member := func(cal, user, email, name string) map[string]any {
		return map[string]any{"calendar_id": cal, "user_id": user, "user_email": email, "user_name": name}
	}

	// §4.1 events.
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt10, e2eCalA, "Game", e2eBob))
	x.to(calA, schema.EventCreated, ref(e2eEvt10, "Game", e2eCalA))
	x.to(calA, schema.EventAssigned, assignment(e2eBob, "", false, e2eCalA))
	e2eExec(t, conn, `UPDATE events SET title = 'Big game', location = 'Field 2' WHERE id = $1`, e2eEvt10)
	x.to(calA, schema.EventUpdated, map[string]any{"event_id": e2eEvt10, "event_title": "Big game", "changed": []string{"title", "location"}})
	e2eExec(t, conn, `UPDATE events SET assigned_to_user_id = NULL WHERE id = $1`, e2eEvt10)
	x.to(calA, schema.EventUnassigned, assignment("", e2eBob, false, e2eCalA))
	e2eExec(t, conn, `UPDATE events SET assigned_to_user_id = $2, description = 'Bring water' WHERE id = $1`, e2eEvt10, e2eAda)
	x.to(calA, schema.EventAssigned, assignment(e2eAda, "", false, e2eCalA))
	x.to(calA, schema.EventUpdated, map[string]any{"event_id": e2eEvt10, "changed": []string{"description"}})
	e2eExec(t, conn, `UPDATE events SET is_skipped = true WHERE id = $1`, e2eEvt10)
	x.to(calA, schema.EventAssigned, assignment(e2eAda, e2eAda, true, e2eCalA))
	e2eExec(t, conn, `UPDATE events SET version = version + 1, updated_at = now(), sync_in_progress = true, last_modified = now() WHERE id = $1`, e2eEvt10)
	e2eExec(t, conn, `BEGIN; `+e2eInsertEventSQL(e2eEvt13, e2eCalA, "Rolled back", "")+`; ROLLBACK`)
	e2eExec(t, conn, `UPDATE events SET event_calendar_id = $2 WHERE id = $1`, e2eEvt10, e2eCalB)
	x.to(calA, schema.EventDeleted, ref(e2eEvt10, "Big game", e2eCalA))
	x.to(calB, schema.EventCreated, ref(e2eEvt10, "Big game", e2eCalB))
	e2eExec(t, conn, `DELETE FROM events WHERE id = $1`, e2eEvt10)
	x.to(calB, schema.EventDeleted, ref(e2eEvt10, "Big game", e2eCalB))

	// §4.3 calendars: a sync window, a failed sync, a rename.
	e2eExec(t, conn, `UPDATE event_calendars SET sync_in_progress = true WHERE id = $1`, e2eCalA)
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt11, e2eCalA, "Synced", ""))
	x.to(calA, schema.EventCreated, ref(e2eEvt11, "Synced", e2eCalA))
	e2eExec(t, conn, `UPDATE events SET title = 'Practice (moved)' WHERE id = $1`, e2eEvt1)
	x.to(calA, schema.EventUpdated, map[string]any{"event_id": e2eEvt1, "changed": []string{"title"}})
	e2eExec(t, conn, `UPDATE event_calendars SET sync_in_progress = false, last_sync_at = now(), last_sync_status = 'success' WHERE id = $1`, e2eCalA)
	x.to(calA, schema.CalendarSynced, map[string]any{"calendar_id": e2eCalA, "calendar_name": "Soccer",
		"events_created": 1, "events_updated": 1, "events_deleted": 0})
	e2eExec(t, conn, `UPDATE event_calendars SET last_sync_at = now(), last_sync_status = 'error', last_sync_error = 'ICS feed returned 404' WHERE id = $1`, e2eCalB)
	x.to(calB, schema.CalendarSyncFailed, map[string]any{"calendar_id": e2eCalB, "calendar_name": "Piano", "error": "ICS feed returned 404"})
	e2eExec(t, conn, `UPDATE event_calendars SET name = 'Swimming', color = '#00FF00' WHERE id = $1`, e2eCalC)
	x.to(calC, schema.CalendarUpdated, map[string]any{"calendar_id": e2eCalC, "calendar_name": "Swimming", "changed": []string{"name", "color"}})

	// §4.4 supplemental events: a conflict across calendars A and B.
	e2eExec(t, conn, `DELETE FROM supplemental_events WHERE (parent_event_id = $1 AND type = 'return') OR (parent_event_id = $2 AND type = 'departure')`, e2eEvt1, e2eEvt2)
	conflict := map[string]any{"event1_id": e2eEvt1, "event2_id": e2eEvt2, "reason": "same_location"}
	x.to(calA, schema.ConflictResolved, conflict)
	x.to(calB, schema.ConflictResolved, conflict)

	// §4.7 explicit events.
	e2eExec(t, conn, `SELECT koordi_realtime.emit('calendar:' || $1::text, 'event:reminder', jsonb_build_object('minutes', 15))`, e2eCalB)
	x.to(calB, "event:reminder", map[string]any{"minutes": 15})
	e2eExec(t, conn, `BEGIN; SELECT koordi_realtime.emit('calendar:`+e2eCalB+`', 'event:reminder', '{"minutes": 99}'); ROLLBACK`)

	// §4.2 memberships. An invitation reaches the invited user only; its
	// acceptance adds eve's socket to Swim's room without join:calendar, so
	// she gets member:added and the next event of the calendar.
	e2eExec(t, conn, `INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, status, invited_by_user_id)
		VALUES ('d1000000-0000-4000-8000-000000000001', $1, 'eve@example.com', 'tok-eve', 'pending', $2)`, e2eCalC, e2eDan)
	x.to([]string{eve}, schema.InvitationReceived, map[string]any{"calendar_id": e2eCalC, "calendar_name": "Swimming",
		"inviter_name": "Dan", "invited_email": "eve@example.com"})
	// An invitation to an email no user has, and its withdrawal: nothing.
	e2eExec(t, conn, `INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, status, invited_by_user_id)
		VALUES ('d1000000-0000-4000-8000-000000000002', $1, 'nobody@example.com', 'tok-nobody', 'pending', $2)`, e2eCalC, e2eDan)
	e2eExec(t, conn, `DELETE FROM event_calendar_memberships WHERE id = 'd1000000-0000-4000-8000-000000000002'`)
	e2eExec(t, conn, `UPDATE event_calendar_memberships SET status = 'accepted', user_id = $1, responded_at = now() WHERE id = 'd1000000-0000-4000-8000-000000000001'`, e2eEve)
	calC = []string{dan, eve}
	x.to(calC, schema.MemberAdded, member(e2eCalC, e2eEve, "eve@example.com", "Eve"))
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt12, e2eCalC, "Laps", ""))
	x.to(calC, schema.EventCreated, ref(e2eEvt12, "Laps", e2eCalC))

	// bob leaves Soccer; an event committed right after (next commit, no
	// pause) must not reach him. He leaves Piano in the same transaction as
	// an event of Piano, which must not reach him either. He gets each
	// member:removed once, through his user room.
	e2eExec(t, conn, `DELETE FROM event_calendar_memberships WHERE event_calendar_id = $1 AND user_id = $2`, e2eCalA, e2eBob)
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt13, e2eCalA, "After bob", ""))
	bobA := member(e2eCalA, e2eBob, "bob@example.com", "Bob")
	x.to([]string{adaWS, adaPoll}, schema.MemberRemoved, bobA)
	x.to([]string{bob}, schema.MemberRemoved, bobA)
	x.to([]string{adaWS, adaPoll}, schema.EventCreated, ref(e2eEvt13, "After bob", e2eCalA))
	e2eExec(t, conn, `BEGIN;
		UPDATE event_calendar_memberships SET status = 'declined' WHERE event_calendar_id = '`+e2eCalB+`' AND user_id = '`+e2eBob+`';
		`+e2eInsertEventSQL(e2eEvt14, e2eCalB, "Without bob", "")+`;
		COMMIT`)
	bobB := member(e2eCalB, e2eBob, "bob@example.com", "Bob")
	x.to([]string{cyd}, schema.MemberRemoved, bobB)
	x.to([]string{bob}, schema.MemberRemoved, bobB)
	x.to([]string{cyd}, schema.EventCreated, ref(e2eEvt14, "Without bob", e2eCalB))

	// join:calendar is checked against the state the stream keeps: once
	// bob has been told of his removals, he is refused; ada is accepted
	// (she is in the room already).
	c.waitFor("bob told of both removals", func(rs []e2eReport) bool {
		n := 0
		for _, r := range rs {
			if r.ID == bob && r.Event == schema.MemberRemoved {
				n++
			}
		}
		return n == 2
	})
	if code := e2eAckCode(t, c.emit(bob, gateway.EventJoinCalendar, e2eCalA)); code != gateway.CodeForbidden {
		t.Errorf("bob join:calendar Soccer after his removal: %q, want %s", code, gateway.CodeForbidden)
	}
	if code := e2eAckCode(t, c.emit(adaWS, gateway.EventJoinCalendar, e2eCalA)); code != "" {
		t.Errorf("ada join:calendar Soccer: refused with %s", code)
	}

	// §4.6: a rename and a membership in one transaction carry the new name.
	e2eExec(t, conn, `BEGIN; UPDATE users SET name = 'Daniel' WHERE id = '`+e2eDan+`'; `+e2eAcceptedSQL(e2eCalA, e2eDan, e2eAda)+`; COMMIT`)
	calA = []string{adaWS, adaPoll, dan}
	x.to(calA, schema.MemberAdded, member(e2eCalA, e2eDan, "dan@example.com", "Daniel"))

	// A deleted calendar: calendar:deleted (nothing for the cascaded rows),
	// then nothing, even an explicit event to its room committed right after.
	e2eExec(t, conn, `DELETE FROM event_calendars WHERE id = $1`, e2eCalC)
	x.to(calC, schema.CalendarDeleted, map[string]any{"calendar_id": e2eCalC, "calendar_name": "Swimming"})
	e2eExec(t, conn, `SELECT koordi_realtime.emit('calendar:' || $1::text, 'event:reminder', '{"minutes": 1}')`, e2eCalC)
	c.waitEvent(dan, "calendar:deleted", func(ev e2eEvent) bool { return ev.Event == schema.CalendarDeleted })
	if code := e2eAckCode(t, c.emit(dan, gateway.EventJoinCalendar, e2eCalC)); code != gateway.CodeForbidden {
		t.Errorf("dan join:calendar of the deleted calendar: %q, want %s", code, gateway.CodeForbidden)
	}

	e2eEmitFence(t, conn, 1, e2eAda, e2eBob, e2eCyd, e2eDan, e2eEve)
	all := []string{adaWS, adaPoll, bob, cyd, dan, eve}
	for _, sockets := range [][]string{{adaWS, adaPoll}, {bob}, {cyd}, {dan}, {eve}} {
		x.to(sockets, e2eFence, map[string]any{"n": 1}) // one event per user room
	}
	c.waitFence(1, all...)
	x.check(t, c)

	// The expiring token: both sockets are closed at the transport level,
	// reconnect, and are refused; no further connect follows.
	for _, id := range []string{"exp-ws", "exp-poll"} {
		c.waitFor(id+" refused after its token expired", func(rs []e2eReport) bool {
			for _, r := range rs {
				if r.ID == id && r.Ev == "connect_error" && r.Message == "Authentication error: token expired" {
					return true
				}
			}
			return false
		})
		if d := c.of(id, "disconnect"); len(d) != 1 || d[0].Reason != "transport close" {
			t.Errorf("%s: disconnects %+v, want one with reason transport close", id, d)
		}
		if n := len(c.of(id, "connect")); n != 1 {
			t.Errorf("%s connected %d times, want once (the expired token is refused)", id, n)
		}
	}
	for _, id := range all {
		if d := c.of(id, "disconnect"); len(d) != 0 {
			t.Errorf("%s was disconnected: %+v", id, d)
		}
	}
}

// e2eAckCode is the error_code of a refusal ack ("" for an accepted one).
func e2eAckCode(t *testing.T, args []json.RawMessage) string {
	t.Helper()
	var r gateway.Refusal
	if len(args) != 1 || json.Unmarshal(args[0], &r) != nil {
		t.Fatalf("ack %s: want one object", args)
	}
	if r.OK {
		return ""
	}
	return r.ErrorCode
}

var e2eSeedFlag = flag.Int64("e2e.seed", 0, "seed of TestServeRandomOperations (0: from the clock)")

// e2eModel is what the property test believes the database holds.
type e2eModel struct {
	users   []string
	cals    []string             // live calendars
	owner   map[string]string    // calendar → owner
	rows    map[[2]string]string // (calendar, user) → membership status
	events  map[string]string    // event → calendar
	added   int                  // member:added the operations must produce
	removed int                  // member:removed (calendar copies) they must produce
	emitted map[string]int       // user → explicit events sent to the user room
	seq     int
}

func (m *e2eModel) member(cal, user string) bool { return m.rows[[2]string{cal, user}] == "accepted" }

func (m *e2eModel) id(prefix string) string {
	m.seq++
	return fmt.Sprintf("%s-0000-4000-8000-%012d", prefix, m.seq)
}

func e2ePick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

// TestServeRandomOperations is the property test of issue 4: a random,
// seeded sequence of ~200 operations (memberships added, accepted, declined
// and deleted, events created, assigned, edited, moved and deleted,
// calendars created and deleted, explicit events, removals in the same
// transaction as an event of the calendar) across 6 users and about 4
// calendars, committed back to back while 8 sockets (websocket, polling,
// polling with upgrade) stay connected. Afterwards each socket must have
// received exactly the events of the calendars its user was an accepted
// member of at each event's commit, and its user room's events, with the
// same offsets and payloads, in commit order: no leak, no loss.
//
// The oracle is `koordi-realtime tail` on the same database with its own
// slot (every derived event with its room and offset), combined with the
// membership timeline, which the stream itself carries (member:added,
// member:removed, calendar:deleted), starting from the seeded memberships;
// the timeline is cross-checked against the operations that were run.
// Reproduce a failure with -e2e.seed=<printed seed>.
func TestServeRandomOperations(t *testing.T) {
	if seed := *e2eSeedFlag; seed != 0 {
		e2eRandomOperations(t, seed)
		return
	}
	base := time.Now().UnixNano()
	for i := int64(0); i < 3; i++ {
		seed := base + i
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { e2eRandomOperations(t, seed) })
	}
}

func e2eRandomOperations(t *testing.T, seed int64) {
	t.Logf("seed %d (rerun with -run TestServeRandomOperations -e2e.seed=%d)", seed, seed)
	r := rand.New(rand.NewSource(seed))

	url, conn := e2eDatabase(t)
	m := &e2eModel{owner: map[string]string{}, rows: map[[2]string]string{}, events: map[string]string{}, emitted: map[string]int{}}
	for i := 0; i < 6; i++ {
		u := fmt.Sprintf("a2000000-0000-4000-8000-%012d", i)
		m.users = append(m.users, u)
		e2eExec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, $2, $3)`, u, fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("User %d", i))
	}
	e2eExec(t, conn, `INSERT INTO children (id, name) VALUES ($1, 'Kid')`, e2eKid)
	newCalendar := func(seeding bool) string {
		cal, owner := m.id("c2000000"), e2ePick(r, m.users)
		e2eExec(t, conn, `BEGIN; INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id)
			VALUES ('`+cal+`', 'Cal `+cal[len(cal)-4:]+`', 'https://example.com/x.ics', '`+e2eKid+`', '`+owner+`'); `+
			e2eAcceptedSQL(cal, owner, owner)+`; COMMIT`)
		m.cals = append(m.cals, cal)
		m.owner[cal] = owner
		m.rows[[2]string{cal, owner}] = "accepted"
		if !seeding {
			m.added++
		}
		return cal
	}
	for i := 0; i < 4; i++ {
		cal := newCalendar(true)
		for _, u := range m.users {
			if !m.member(cal, u) && r.Intn(10) < 4 {
				e2eExec(t, conn, e2eAcceptedSQL(cal, u, m.owner[cal]))
				m.rows[[2]string{cal, u}] = "accepted"
			}
		}
	}
	initial := map[string]map[string]bool{} // calendar → accepted users, at the start
	for k, st := range m.rows {
		if st == "accepted" {
			if initial[k[0]] == nil {
				initial[k[0]] = map[string]bool{}
			}
			initial[k[0]][k[1]] = true
		}
	}
	e2eSetup(t, url)

	srv := startE2EServer(t, url)
	var tailOut, tailErr syncBuffer
	tailCtx, stopTail := context.WithCancel(context.Background())
	tailDone := make(chan int, 1)
	go func() {
		tailDone <- run(tailCtx, envOf(map[string]string{"DATABASE_URL": url, "TAIL_SLOT_NAME": e2eSlot("oracle", url)}, &tailOut, &tailErr), []string{"tail"})
	}()
	defer func() {
		stopTail()
		if code := <-tailDone; code != 0 {
			t.Errorf("tail exit %d: %s", code, tailErr.String())
		}
		e2eDropSlot(t, url, e2eSlot("oracle", url))
	}()
	waitUntil(t, "tail streaming", func() bool { return strings.Contains(tailErr.String(), "streaming started") })

	c := startE2EClients(t, srv.url())
	socketsOf := map[string][]string{}
	transports := [][]string{{"websocket"}, {"polling"}, nil}
	var sockets []string
	for i, u := range append(append([]string{}, m.users...), m.users[0], m.users[1]) {
		id := fmt.Sprintf("s%d-u%s", i, u[len(u)-1:])
		c.connect(id, e2eToken(t, u, "", time.Hour), transports[i%len(transports)]...)
		socketsOf[u] = append(socketsOf[u], id)
		sockets = append(sockets, id)
	}

	// The operations, committed back to back.
	counts := map[string]int{}
	pickEvent := func() (string, bool) {
		if len(m.events) == 0 {
			return "", false
		}
		ids := make([]string, 0, len(m.events))
		for id := range m.events {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return e2ePick(r, ids), true
	}
	assignee := func() string {
		if r.Intn(4) == 0 {
			return ""
		}
		return e2ePick(r, m.users)
	}
	const ops = 200
	for done := 0; done < ops; {
		op := r.Intn(100)
		switch {
		case op < 25: // add a member
			cal, u := e2ePick(r, m.cals), e2ePick(r, m.users)
			k := [2]string{cal, u}
			if m.member(cal, u) {
				continue
			}
			switch {
			case m.rows[k] == "declined":
				e2eExec(t, conn, `UPDATE event_calendar_memberships SET status = 'accepted' WHERE event_calendar_id = $1 AND user_id = $2`, cal, u)
				counts["re-accept"]++
			case r.Intn(2) == 0:
				e2eExec(t, conn, e2eAcceptedSQL(cal, u, m.owner[cal]))
				counts["insert accepted"]++
			default:
				mid := m.id("d2000000")
				e2eExec(t, conn, `INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, status, invited_by_user_id)
					VALUES ($1::uuid, $2, (SELECT email FROM users WHERE id = $3), $1::text, 'pending', $4)`, mid, cal, u, m.owner[cal])
				e2eExec(t, conn, `UPDATE event_calendar_memberships SET status = 'accepted', user_id = $2 WHERE id = $1`, mid, u)
				counts["invite and accept"]++
			}
			m.rows[k] = "accepted"
			m.added++
		case op < 45: // remove a member (never the owner)
			cal, u := e2ePick(r, m.cals), e2ePick(r, m.users)
			k := [2]string{cal, u}
			if !m.member(cal, u) || m.owner[cal] == u {
				continue
			}
			del := `DELETE FROM event_calendar_memberships WHERE event_calendar_id = '` + cal + `' AND user_id = '` + u + `'`
			if r.Intn(2) == 0 {
				del = `UPDATE event_calendar_memberships SET status = 'declined' WHERE event_calendar_id = '` + cal + `' AND user_id = '` + u + `'`
				m.rows[k] = "declined"
			} else {
				delete(m.rows, k)
			}
			if r.Intn(3) == 0 {
				// The removal and an event of the calendar in one transaction.
				ev := m.id("e2000000")
				e2eExec(t, conn, "BEGIN; "+del+"; "+e2eInsertEventSQL(ev, cal, "with removal", assignee())+"; COMMIT")
				m.events[ev] = cal
				counts["remove with event"]++
			} else {
				e2eExec(t, conn, del)
				counts["remove"]++
			}
			m.removed++
		case op < 60: // create an event
			ev, cal := m.id("e2000000"), e2ePick(r, m.cals)
			e2eExec(t, conn, e2eInsertEventSQL(ev, cal, "created", assignee()))
			m.events[ev] = cal
			counts["create event"]++
		case op < 75: // (re)assign or skip
			ev, ok := pickEvent()
			if !ok {
				continue
			}
			if a := assignee(); a == "" {
				e2eExec(t, conn, `UPDATE events SET assigned_to_user_id = NULL, is_skipped = NOT is_skipped WHERE id = $1`, ev)
			} else {
				e2eExec(t, conn, `UPDATE events SET assigned_to_user_id = $2 WHERE id = $1`, ev, a)
			}
			counts["assign"]++
		case op < 85: // edit
			ev, ok := pickEvent()
			if !ok {
				continue
			}
			e2eExec(t, conn, `UPDATE events SET title = $2, version = version + 1 WHERE id = $1`, ev, fmt.Sprintf("edit %d", done))
			counts["edit"]++
		case op < 92: // delete an event
			ev, ok := pickEvent()
			if !ok {
				continue
			}
			e2eExec(t, conn, `DELETE FROM events WHERE id = $1`, ev)
			delete(m.events, ev)
			counts["delete event"]++
		case op < 95: // move an event to another calendar
			ev, ok := pickEvent()
			to := e2ePick(r, m.cals)
			if !ok || m.events[ev] == to {
				continue
			}
			e2eExec(t, conn, `UPDATE events SET event_calendar_id = $2 WHERE id = $1`, ev, to)
			m.events[ev] = to
			counts["move event"]++
		case op < 97: // an explicit event to a user room
			u := e2ePick(r, m.users)
			e2eExec(t, conn, `SELECT koordi_realtime.emit('user:' || $1::text, 'e2e:note', jsonb_build_object('n', $2::int))`, u, done)
			m.emitted[u]++
			counts["emit"]++
		case op < 98: // delete a calendar, create another
			if len(m.cals) < 3 {
				continue
			}
			i := r.Intn(len(m.cals))
			cal := m.cals[i]
			e2eExec(t, conn, `DELETE FROM event_calendars WHERE id = $1`, cal)
			if r.Intn(2) == 0 {
				// A stale explicit event to the deleted room, committed right
				// after: it must reach nobody.
				e2eExec(t, conn, `SELECT koordi_realtime.emit('calendar:' || $1::text, 'e2e:stale', '{}')`, cal)
			}
			m.cals = append(m.cals[:i], m.cals[i+1:]...)
			for k := range m.rows {
				if k[0] == cal {
					delete(m.rows, k)
				}
			}
			for ev, c := range m.events {
				if c == cal {
					delete(m.events, ev)
				}
			}
			counts["delete calendar"]++
		default:
			if len(m.cals) >= 5 {
				continue
			}
			newCalendar(false)
			counts["create calendar"]++
		}
		done++
	}
	t.Logf("operations: %v", counts)

	e2eEmitFence(t, conn, 1, m.users...)
	c.waitFence(1, sockets...)
	waitUntil(t, "tail printing the fence", func() bool { return strings.Count(tailOut.String(), `"`+e2eFence+`"`) == len(m.users) })

	// Replay the oracle over the membership timeline.
	members := map[string]map[string]bool{}
	for cal, us := range initial {
		members[cal] = map[string]bool{}
		for u := range us {
			members[cal][u] = true
		}
	}
	want := map[string][]line{}
	addedSeen, removedSeen, emittedSeen := 0, 0, map[string]int{}
	for _, l := range parseLines(t, tailOut.String()) {
		kind, id, err := schema.ParseRoom(l.Room)
		if err != nil {
			t.Fatalf("tail printed room %q: %v", l.Room, err)
		}
		if kind == schema.RoomUser {
			if l.Event == "e2e:note" {
				emittedSeen[id]++
			}
			want[id] = append(want[id], l)
			continue
		}
		if members[id] == nil {
			members[id] = map[string]bool{}
		}
		var who schema.Member
		switch l.Event {
		case schema.MemberAdded:
			if err := json.Unmarshal(l.Data, &who); err != nil {
				t.Fatal(err)
			}
			members[id][who.UserID] = true // joins first: gets member:added
			addedSeen++
		case schema.MemberRemoved:
			if err := json.Unmarshal(l.Data, &who); err != nil {
				t.Fatal(err)
			}
			delete(members[id], who.UserID) // leaves first: only the user-room copy
			removedSeen++
		}
		for u := range members[id] {
			want[u] = append(want[u], l)
		}
		if l.Event == schema.CalendarDeleted {
			delete(members, id)
		}
	}
	// The timeline the stream carried is the one the operations made.
	if addedSeen != m.added || removedSeen != m.removed {
		t.Errorf("tail saw %d member:added and %d member:removed; the operations made %d and %d", addedSeen, removedSeen, m.added, m.removed)
	}
	for k, st := range m.rows {
		if (st == "accepted") != members[k[0]][k[1]] {
			t.Errorf("membership %v: model %s, timeline %v", k, st, members[k[0]][k[1]])
		}
	}
	for cal, us := range members {
		for u := range us {
			if !m.member(cal, u) {
				t.Errorf("timeline has %s in %s; the model does not", u, cal)
			}
		}
	}
	for u, n := range m.emitted {
		if emittedSeen[u] != n {
			t.Errorf("user %s: %d explicit events printed, %d emitted", u, emittedSeen[u], n)
		}
	}

	delivered := 0
	for u, ids := range socketsOf {
		for _, id := range ids {
			got := c.events(id)
			exp := want[u]
			delivered += len(got)
			for i := 0; i < max(len(got), len(exp)); i++ {
				if i >= len(got) {
					t.Errorf("%s (user %s): lost %s %s %s and %d more", id, u, exp[i].Offset, exp[i].Event, exp[i].Data, len(exp)-i-1)
					break
				}
				if i >= len(exp) {
					t.Errorf("%s (user %s): leaked %s %s %s", id, u, got[i].Raw, got[i].Event, got[i].Data)
					break
				}
				if got[i].Raw != exp[i].Offset || got[i].Event != exp[i].Event || !e2eJSONEqual(got[i].Data, exp[i].Data) {
					t.Errorf("%s (user %s): event %d is %s %s %s, want %s %s %s", id, u, i,
						got[i].Raw, got[i].Event, got[i].Data, exp[i].Offset, exp[i].Event, exp[i].Data)
					break
				}
			}
		}
	}
	t.Logf("%d events derived, %d delivered to %d sockets", strings.Count(tailOut.String(), "\n"), delivered, len(sockets))
}

// e2eWriter commits `UPDATE events SET title = 'w-<i>'` for i = 0..n-1,
// one commit about every 10 ms, through PostgreSQL restarts: a failed
// commit is retried on a new connection (so a title may be committed
// twice, with two offsets).
type e2eWriter struct {
	n     int
	count atomic.Int64 // commits done
	done  chan struct{}
	err   error
}

func startE2EWriter(t *testing.T, url, eventID string, n int) *e2eWriter {
	t.Helper()
	w := &e2eWriter{n: n, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(w.done)
		w.err = w.run(ctx, url, eventID)
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func (w *e2eWriter) run(ctx context.Context, url, eventID string) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(2 * e2eWait)
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

func (w *e2eWriter) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(3 * e2eWait):
		t.Fatal("writer did not finish")
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
}

// e2eTitles checks what socket id received of the writer's n commits:
// every title at least once; each event either after every earlier one
// (offsets increasing) or an exact repeat (same offset, same title) of one
// received before. It returns how many repeats there were.
func e2eTitles(t *testing.T, c *e2eClients, id string, n int) int {
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
	for i := 0; i < n; i++ {
		if title := fmt.Sprintf("w-%04d", i); !titles[title] {
			t.Errorf("%s never received commit %s", id, title)
		}
	}
	return repeats
}

// e2eStreamSetup is the database of the crash tests: one calendar with two
// members, one event the writer updates, two sockets (websocket, polling).
func e2eStreamSetup(t *testing.T, vars ...string) (url string, conn *pgx.Conn, srv *e2eServer, c *e2eClients) {
	t.Helper()
	url, conn = e2eDatabase(t)
	e2eSeed(t, conn)
	e2eSetup(t, url)
	srv = startE2EServer(t, url, vars...)
	c = startE2EClients(t, srv.url())
	c.connect("ada", e2eToken(t, e2eAda, "ada@example.com", time.Hour), "websocket")
	c.connect("bob", e2eToken(t, e2eBob, "bob@example.com", time.Hour), "polling")
	return url, conn, srv, c
}

// TestServeCrashRecovery stops serve while a writer commits about one
// event every 10 ms, and starts it again on the same port: with SIGKILL (a
// crash: no goodbye, no last confirmation) and with SIGTERM (a deploy: exit
// 0). Both sockets, connected before, reconnect by themselves to the new
// process with socket.recovered === true (connection state recovery with the
// pid the old process issued and the last offset received) and receive every
// commit, including those made while no process ran, in commit order;
// repeats are allowed only as exact repeats (same offset). The new process
// rebuilds its replay window from the WAL the slot retained (the default 2m
// window, DESIGN.md §5).
func TestServeCrashRecovery(t *testing.T) {
	for _, how := range []string{"SIGKILL", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			url, _, srv, c := e2eStreamSetup(t)
			w := startE2EWriter(t, url, e2eEvt1, 500)
			for _, id := range []string{"ada", "bob"} {
				c.waitFor(id+" receiving 150 commits", e2eUpdatedAtLeast(id, 150))
			}
			if how == "SIGKILL" {
				srv.kill()
			} else if err, took := srv.stop(15 * time.Second); err != nil {
				t.Fatalf("serve after SIGTERM: %v (in %s)", err, took)
			}
			stoppedAt := w.count.Load()
			srv.start()
			if w.count.Load() == stoppedAt {
				t.Fatal("no commit while serve was down: the test proves nothing")
			}
			w.wait(t)
			last := fmt.Sprintf("w-%04d", w.n-1)
			for _, id := range []string{"ada", "bob"} {
				r := c.waitConnect(id, 2)
				if !r.Recovered {
					t.Errorf("%s reconnected after %s with recovered = false (pid %s): missed events cannot be replayed", id, how, r.PID)
				}
				c.waitEvent(id, last, func(ev e2eEvent) bool {
					return ev.Event == schema.EventUpdated && strings.Contains(string(ev.Data), `"`+last+`"`)
				})
				repeats := e2eTitles(t, c, id, w.n)
				t.Logf("%s: stopped after %d commits; %d repeats; disconnects %v", id, stoppedAt, repeats, c.of(id, "disconnect"))
			}
		})
	}
}

// TestServePostgresRestart restarts PostgreSQL mid-stream, while a writer
// commits about one event every 10 ms, with serve at its default replay
// window (2m): serve reconnects by itself and both sockets get every commit,
// in order, each offset once, without being disconnected.
//
// "fast" is pg_ctl's default mode (what an administrator or systemd does);
// it waits for every WAL sender to see its client confirm all WAL sent. If
// the fast shutdown is still blocked after e2eShutdownBound, the test
// reports that as a bug, then kills serve (which releases PostgreSQL) and
// starts it again, and still requires that nothing was lost.
func TestServePostgresRestart(t *testing.T) {
	for _, mode := range []string{"immediate", "fast"} {
		t.Run(mode, func(t *testing.T) {
			url, _, srv, c := e2eStreamSetup(t)
			w := startE2EWriter(t, url, e2eEvt1, 300)
			for _, id := range []string{"ada", "bob"} {
				c.waitFor(id+" receiving 100 commits", e2eUpdatedAtLeast(id, 100))
			}
			restarted := make(chan error, 1)
			go func() { restarted <- cluster.Restart(context.Background(), mode) }()
			killed := false
			select {
			case err := <-restarted:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(e2eShutdownBound):
				t.Errorf("BUG: PostgreSQL %s shutdown still blocked after %s: serve's WAL sender waits for a flush "+
					"confirmation that trails by the replay window (REPLAY_WINDOW); killing serve to release it", mode, e2eShutdownBound)
				srv.kill()
				if err := <-restarted; err != nil {
					t.Fatal(err)
				}
				srv.start()
				killed = true
			}
			w.wait(t)
			last := fmt.Sprintf("w-%04d", w.n-1)
			for _, id := range []string{"ada", "bob"} {
				c.waitEvent(id, last, func(ev e2eEvent) bool {
					return ev.Event == schema.EventUpdated && strings.Contains(string(ev.Data), `"`+last+`"`)
				})
				repeats := e2eTitles(t, c, id, w.n)
				if killed {
					if r := c.waitConnect(id, 2); !r.Recovered {
						t.Errorf("%s reconnected to the restarted serve with recovered = false", id)
					}
					continue
				}
				if repeats != 0 {
					t.Errorf("%s received %d events twice; one process delivers each offset once", id, repeats)
				}
				if d := c.of(id, "disconnect"); len(d) != 0 {
					t.Errorf("%s was disconnected: %+v", id, d)
				}
			}
		})
	}
}

// e2eShutdownBound is how long a PostgreSQL shutdown may wait for serve.
const e2eShutdownBound = 15 * time.Second

// e2eUpdatedAtLeast holds once socket id received n event:updated.
func e2eUpdatedAtLeast(id string, n int) func([]e2eReport) bool {
	return func(rs []e2eReport) bool {
		k := 0
		for _, r := range rs {
			if r.ID == id && r.Ev == "event" && r.Event == schema.EventUpdated {
				k++
			}
		}
		return k >= n
	}
}

// TestServeGracefulStop sends SIGTERM to serve with sockets connected over
// websocket and polling: it exits 0 within its shutdown grace, the sockets
// see "transport close" (a reason socket.io-client reconnects on), the slot's
// confirmed_flush_lsn has advanced past the last delivered commit, and the
// sockets reconnect by themselves to the successor on the same port and get
// its events. The replay window is 1s here, because the confirmed position
// trails the newest hand-off by the window (DESIGN.md §5); the default 2m
// would keep it at the slot's start for the whole test.
func TestServeGracefulStop(t *testing.T) {
	url, conn, srv, c := e2eStreamSetup(t, "REPLAY_WINDOW=1s")
	slot := e2eSlot("serve", url)
	before := e2eSlotConfirmed(t, conn, slot)
	for i := 0; i < 20; i++ {
		e2eExec(t, conn, `UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("w-%04d", i), e2eEvt1)
	}
	for _, id := range []string{"ada", "bob"} {
		c.waitFor(id+" receiving 20 commits", e2eUpdatedAtLeast(id, 20))
	}
	events := c.events("ada")
	lastLSN := events[len(events)-1].Offset.LSN
	// The window must have passed since the last hand-off for it to be
	// confirmable; this is the one wait on the clock.
	time.Sleep(1500 * time.Millisecond)

	err, took := srv.stop(15 * time.Second)
	if err != nil {
		t.Fatalf("serve after SIGTERM: %v (in %s)", err, took)
	}
	t.Logf("exit 0 %s after SIGTERM", took.Round(time.Millisecond))
	for _, id := range []string{"ada", "bob"} {
		c.waitFor(id+" disconnected", func(rs []e2eReport) bool {
			for _, r := range rs {
				if r.ID == id && r.Ev == "disconnect" {
					return true
				}
			}
			return false
		})
		if d := c.of(id, "disconnect"); d[0].Reason != "transport close" {
			t.Errorf("%s: disconnect reason %q, want transport close", id, d[0].Reason)
		}
	}
	// The WAL sender applies the last status update asynchronously.
	var after uint64
	deadline := time.Now().Add(10 * time.Second)
	for after = e2eSlotConfirmed(t, conn, slot); after <= lastLSN && time.Now().Before(deadline); after = e2eSlotConfirmed(t, conn, slot) {
		time.Sleep(20 * time.Millisecond)
	}
	if after <= lastLSN || after <= before {
		t.Errorf("confirmed_flush_lsn %X after SIGTERM (was %X at start); want past the last delivered commit %X", after, before, lastLSN)
	}
	if !strings.Contains(srv.stderr.String(), "stopped") {
		t.Errorf("serve did not log that it stopped")
	}

	// Everything was confirmed, so the successor decodes nothing of the
	// past: the sockets reconnect as fresh sessions (nothing was missed,
	// but nothing can be proven to the new process either) and get what is
	// committed after.
	srv.start()
	for _, id := range []string{"ada", "bob"} {
		r := c.waitConnect(id, 2)
		t.Logf("%s reconnected to the successor over %s, recovered %v", id, r.Transport, r.Recovered)
	}
	e2eExec(t, conn, `UPDATE events SET title = 'after restart' WHERE id = $1`, e2eEvt1)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "the successor's event", func(ev e2eEvent) bool {
			return ev.Event == schema.EventUpdated && strings.Contains(string(ev.Data), `"after restart"`)
		})
	}
}

// TestServeCrashMembershipChanges kills serve, changes memberships while it
// is down, and starts it again: every socket recovers (recovered === true)
// and gets what it missed under its rooms as they are now (DESIGN.md §5,
// §6): the member removed while serve was down gets nothing of that calendar
// committed after the removal, only member:removed through his user room;
// the member added gets member:added and what followed; the others get
// everything of their calendars, each exactly once, in commit order.
func TestServeCrashMembershipChanges(t *testing.T) {
	url, conn := e2eDatabase(t)
	e2eSeed(t, conn)
	e2eSetup(t, url)
	srv := startE2EServer(t, url)
	c := startE2EClients(t, srv.url())
	const ada, bob, cyd, eve = "ada", "bob", "cyd", "eve"
	c.connect(ada, e2eToken(t, e2eAda, "ada@example.com", time.Hour), "websocket")
	c.connect(bob, e2eToken(t, e2eBob, "bob@example.com", time.Hour), "polling")
	c.connect(cyd, e2eToken(t, e2eCyd, "cyd@example.com", time.Hour))
	c.connect(eve, e2eToken(t, e2eEve, "eve@example.com", time.Hour), "websocket")

	x := &e2eExpect{want: map[string][]e2eWant{}}
	ref := func(id, title, cal string) map[string]any {
		return map[string]any{"event_id": id, "event_title": title, "event_calendar_id": cal}
	}
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt10, e2eCalA, "Before", ""))
	x.to([]string{ada, bob}, schema.EventCreated, ref(e2eEvt10, "Before", e2eCalA))
	e2eExec(t, conn, `SELECT koordi_realtime.emit('user:' || $1::text, 'e2e:hello', '{}')`, e2eEve)
	x.to([]string{eve}, "e2e:hello", map[string]any{})
	e2eEmitFence(t, conn, 1, e2eAda, e2eBob, e2eCyd)
	for _, s := range [][]string{{ada}, {bob}, {cyd}} {
		x.to(s, e2eFence, map[string]any{"n": 1})
	}
	c.waitFence(1, ada, bob, cyd)
	c.waitEvent(eve, "hello", func(ev e2eEvent) bool { return ev.Event == "e2e:hello" })

	srv.kill()
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt11, e2eCalB, "Before eve", ""))
	x.to([]string{cyd, bob}, schema.EventCreated, ref(e2eEvt11, "Before eve", e2eCalB))
	e2eExec(t, conn, e2eAcceptedSQL(e2eCalB, e2eEve, e2eCyd))
	x.to([]string{cyd, bob, eve}, schema.MemberAdded, map[string]any{"calendar_id": e2eCalB, "user_id": e2eEve, "user_name": "Eve"})
	e2eExec(t, conn, `DELETE FROM event_calendar_memberships WHERE event_calendar_id = $1 AND user_id = $2`, e2eCalA, e2eBob)
	bobA := map[string]any{"calendar_id": e2eCalA, "user_id": e2eBob, "user_name": "Bob"}
	x.to([]string{ada}, schema.MemberRemoved, bobA)
	x.to([]string{bob}, schema.MemberRemoved, bobA)
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt12, e2eCalA, "After bob", ""))
	x.to([]string{ada}, schema.EventCreated, ref(e2eEvt12, "After bob", e2eCalA))
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt13, e2eCalB, "After eve", ""))
	x.to([]string{cyd, bob, eve}, schema.EventCreated, ref(e2eEvt13, "After eve", e2eCalB))
	srv.start()

	for _, id := range []string{ada, bob, cyd, eve} {
		if r := c.waitConnect(id, 2); !r.Recovered {
			t.Errorf("%s reconnected with recovered = false", id)
		}
	}
	e2eExec(t, conn, e2eInsertEventSQL(e2eEvt14, e2eCalA, "Live", ""))
	x.to([]string{ada}, schema.EventCreated, ref(e2eEvt14, "Live", e2eCalA))
	e2eEmitFence(t, conn, 2, e2eAda, e2eBob, e2eCyd, e2eEve)
	for _, s := range [][]string{{ada}, {bob}, {cyd}, {eve}} {
		x.to(s, e2eFence, map[string]any{"n": 2})
	}
	c.waitFence(2, ada, bob, cyd, eve)

	// Recovery re-authorises against the rooms as they are now (DESIGN.md
	// §5), so eve, a member of Piano now, may also get the event committed
	// just before she was added; issue 4's property (rooms at each event's
	// commit) would exclude it. Allowed here, and reported.
	got := c.events(eve)
	if len(got) > 1 && got[1].Event == schema.EventCreated && strings.Contains(string(got[1].Data), "Before eve") {
		t.Logf("eve's recovery replayed %s, committed before her membership (rooms-now semantics)", got[1].Data)
		x.want[eve] = append(x.want[eve][:1], append([]e2eWant{{key: "#pre-eve", event: schema.EventCreated,
			fields: ref(e2eEvt11, "Before eve", e2eCalB)}}, x.want[eve][1:]...)...)
	}
	x.check(t, c)
}

// TestServeSlotInvalidated: while serve is down, PostgreSQL invalidates its
// slot (max_slot_wal_keep_size exceeded), so the commits made meanwhile are
// lost to it. The next serve says so in its log, recreates the slot and
// streams on; the sockets from before the gap reconnect with
// recovered = false and get sync:reset {reason}, so they refetch instead of
// trusting stale state (DESIGN.md §5, issue 4 item 6); later commits reach
// them.
func TestServeSlotInvalidated(t *testing.T) {
	url, conn, srv, c := e2eStreamSetup(t)
	slot := e2eSlot("serve", url)
	e2eExec(t, conn, `UPDATE events SET title = 'before' WHERE id = $1`, e2eEvt1)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "before", func(ev e2eEvent) bool { return strings.Contains(string(ev.Data), `"before"`) })
	}
	srv.kill()

	e2eExec(t, conn, `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	e2eExec(t, conn, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		ctx := context.Background()
		if c, err := pgx.Connect(ctx, url); err == nil {
			_, _ = c.Exec(ctx, `ALTER SYSTEM RESET max_slot_wal_keep_size`)
			_, _ = c.Exec(ctx, `SELECT pg_reload_conf()`)
			c.Close(ctx)
		}
	})
	e2eExec(t, conn, `UPDATE events SET title = 'lost' WHERE id = $1`, e2eEvt1)
	status := ""
	for i := 0; i < 20 && status != "lost"; i++ {
		e2eExec(t, conn, `UPDATE events SET version = version + 1 WHERE id = $1`, e2eEvt1)
		e2eExec(t, conn, `SELECT pg_switch_wal()`)
		e2eExec(t, conn, `CHECKPOINT`)
		if err := conn.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status); err != nil {
			t.Fatal(err)
		}
	}
	if status != "lost" {
		t.Fatalf("slot %s: wal_status %q, could not invalidate it", slot, status)
	}

	srv.start()
	if !strings.Contains(srv.stderr.String(), "invalidated") {
		t.Errorf("serve did not say that its slot was invalidated")
	}
	for _, id := range []string{"ada", "bob"} {
		r := c.waitConnect(id, 2)
		if r.Recovered {
			t.Errorf("%s recovered across a gap in the stream", id)
		}
	}
	e2eExec(t, conn, `UPDATE events SET title = 'after' WHERE id = $1`, e2eEvt1)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "after", func(ev e2eEvent) bool { return strings.Contains(string(ev.Data), `"after"`) })
		var resets []string
		for _, ev := range c.events(id) {
			if strings.Contains(string(ev.Data), `"lost"`) {
				t.Errorf("%s received the commit made while the slot was being invalidated: %s", id, ev.Data)
			}
		}
		for _, r := range c.of(id, "event") {
			if r.Event == schema.SyncReset {
				resets = append(resets, string(r.Args[0]))
			}
		}
		if len(resets) != 1 {
			t.Errorf("%s: sync:reset received %d times %v, want once: its session began before the gap", id, len(resets), resets)
		}
	}
}

// TestServeRecoveryAcrossBlips drops the transport of sockets (websocket,
// polling, polling with upgrade) three times each while a writer commits
// about one event every 10 ms: every reconnect is recovered within the same
// process, and every socket receives every commit exactly once, in commit
// order, across live delivery and replay.
func TestServeRecoveryAcrossBlips(t *testing.T) {
	url, conn := e2eDatabase(t)
	e2eSeed(t, conn)
	e2eSetup(t, url)
	srv := startE2EServer(t, url)
	c := startE2EClients(t, srv.url())
	ids := []string{"ws", "poll", "upgrade"}
	c.connect("ws", e2eToken(t, e2eAda, "ada@example.com", time.Hour), "websocket")
	c.connect("poll", e2eToken(t, e2eBob, "bob@example.com", time.Hour), "polling")
	c.connect("upgrade", e2eToken(t, e2eAda, "ada@example.com", time.Hour))

	const drops = 3
	w := startE2EWriter(t, url, e2eEvt1, 400)
	for round := 1; round <= drops; round++ {
		for _, id := range ids {
			c.waitFor(fmt.Sprintf("%s receiving %d commits", id, 80*round), e2eUpdatedAtLeast(id, 80*round))
			c.do(map[string]any{"op": "drop", "id": id})
			if r := c.waitConnect(id, round+1); !r.Recovered {
				t.Errorf("%s: reconnect %d not recovered", id, round)
			}
		}
	}
	w.wait(t)
	last := fmt.Sprintf("w-%04d", w.n-1)
	for _, id := range ids {
		c.waitEvent(id, last, func(ev e2eEvent) bool {
			return ev.Event == schema.EventUpdated && strings.Contains(string(ev.Data), `"`+last+`"`)
		})
		if repeats := e2eTitles(t, c, id, w.n); repeats != 0 {
			t.Errorf("%s received %d events twice", id, repeats)
		}
		if d := c.of(id, "disconnect"); len(d) != drops {
			t.Errorf("%s: %d disconnects, want %d: %+v", id, len(d), drops, d)
		}
	}
}

// TestServeEndpoints checks the operability surface of a running serve
// (DESIGN.md §8) after real traffic: /healthz, /readyz once caught up, and
// /metrics counting the sockets by transport, the refused CONNECT, the
// derived and sent events, the commit-to-send latency and the replication
// positions.
func TestServeEndpoints(t *testing.T) {
	_, conn, srv, c := e2eStreamSetup(t)
	c.connectAsync("forged", e2eToken(t, e2eAda, "ada@example.com", time.Hour)+"x", "websocket")
	c.waitFor("the forged token refused", func(rs []e2eReport) bool {
		for _, r := range rs {
			if r.ID == "forged" && r.Ev == "connect_error" && r.Message == "Authentication error: invalid token" {
				return true
			}
		}
		return false
	})
	const n = 50
	for i := 0; i < n; i++ {
		e2eExec(t, conn, `UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("w-%04d", i), e2eEvt1)
	}
	for _, id := range []string{"ada", "bob"} {
		c.waitFor(id+" receiving every commit", e2eUpdatedAtLeast(id, n))
	}

	get := func(path string) (int, string) {
		t.Helper()
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get(srv.url() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusOK || !strings.HasPrefix(body, "ready") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	_, metrics := get("/metrics")
	value := func(series string) float64 {
		for _, l := range strings.Split(metrics, "\n") {
			if name, v, ok := strings.Cut(l, " "); ok && name == series {
				var f float64
				if _, err := fmt.Sscan(v, &f); err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				return f
			}
		}
		t.Errorf("/metrics has no series %s", series)
		return -1
	}
	checks := []struct {
		series string
		ok     func(float64) bool
		want   string
	}{
		{`koordi_gateway_connected_sockets{transport="websocket"}`, func(v float64) bool { return v == 1 }, "1 (ada)"},
		{`koordi_gateway_connected_sockets{transport="polling"}`, func(v float64) bool { return v == 1 }, "1 (bob)"},
		{`koordi_gateway_auth_failures_total{reason="invalid_token"}`, func(v float64) bool { return v == 1 }, "1"},
		{`koordi_events_derived_total{event="event:updated"}`, func(v float64) bool { return v == n }, fmt.Sprint(n)},
		{`koordi_gateway_messages_sent_total`, func(v float64) bool { return v >= 2*n }, fmt.Sprintf(">= %d", 2*n)},
		{`koordi_gateway_commit_to_send_seconds_count`, func(v float64) bool { return v >= n }, fmt.Sprintf(">= %d", n)},
		{`koordi_gateway_rooms`, func(v float64) bool { return v >= 3 }, ">= 3 (two user rooms, Soccer)"},
		{`koordi_replication_received_lsn`, func(v float64) bool { return v > 0 }, "> 0"},
		{`koordi_replication_lag_bytes`, func(v float64) bool { return v >= 0 }, ">= 0"},
	}
	for _, ch := range checks {
		if v := value(ch.series); !ch.ok(v) {
			t.Errorf("%s = %v, want %s", ch.series, v, ch.want)
		}
	}
}

// TestServeLargeTransaction imports many events in one transaction (an ICS
// feed synced for the first time), more than a socket's outbound queue
// holds: every socket of the calendar — websocket and polling — ends up with
// every event:created exactly once, in commit order. A socket may be cut as a
// slow consumer on the way; it must then recover (recovered === true) and get
// the rest through replay.
func TestServeLargeTransaction(t *testing.T) {
	_, conn, _, c := e2eStreamSetup(t)
	const n = 3000
	e2eExec(t, conn, fmt.Sprintf(`INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time)
		SELECT '%s', 'bulk-' || i, 'bulk-' || lpad(i::text, 5, '0'), '%s', '%s' FROM generate_series(0, %d) AS i`, e2eCalA, e2eStart, e2eEnd, n-1))
	for _, id := range []string{"ada", "bob"} {
		c.waitFor(fmt.Sprintf("%s receiving %d event:created", id, n), func(rs []e2eReport) bool {
			k := 0
			for _, r := range rs {
				if r.ID == id && r.Ev == "event" && r.Event == schema.EventCreated {
					k++
				}
			}
			return k >= n
		})
		var prev schema.Offset
		titles := map[string]bool{}
		for _, ev := range c.events(id) {
			if ev.Offset.Compare(prev) <= 0 {
				t.Fatalf("%s: offset %s after %s", id, ev.Raw, prev)
			}
			prev = ev.Offset
			var p schema.EventRef
			if err := json.Unmarshal(ev.Data, &p); err != nil {
				t.Fatal(err)
			}
			titles[p.EventTitle] = true
		}
		if len(titles) != n {
			t.Errorf("%s: %d distinct titles, want %d", id, len(titles), n)
		}
		for i, r := range c.of(id, "connect")[1:] {
			if !r.Recovered {
				t.Errorf("%s: reconnect %d not recovered", id, i+1)
			}
		}
		t.Logf("%s: %d disconnects %v", id, len(c.of(id, "disconnect")), c.of(id, "disconnect"))
	}
}
