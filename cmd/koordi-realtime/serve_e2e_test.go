package main

// End-to-end tests of `koordi-realtime serve` (issue 4): the real binary as a
// subprocess (testServer), real PostgreSQL (the package's cluster, started by
// TestMain through sql/pgcluster; a database of its own per test, testDB),
// the real socket.io-client in Node (testdata/client/driver.mjs, testClients).
// Every test prepares its database with the binary's migrate and setup
// commands and mints its tokens with the token command, so what passes here
// is what an operator runs. The property test and its model are in
// e2e_model_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/schema"
)

// newScenario is how most serve tests start: Node looked for first (so that
// a missing one is reported before anything else starts), the scenario
// seeded, serve running on it, and a driver to connect sockets with. vars
// add to serve's environment.
func newScenario(t *testing.T, vars ...string) (*testDB, *testServer, *testClients) {
	t.Helper()
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	db.seedScenario()
	db.setup()
	srv := startServer(t, db, vars...)
	return db, srv, startClients(t, srv.url())
}

// newStreamScenario adds the sockets of the crash tests: ada's over
// websocket, bob's over polling, both members of Soccer (and so of
// Practice, the event the writer updates).
func newStreamScenario(t *testing.T, vars ...string) (*testDB, *testServer, *testClients) {
	t.Helper()
	db, srv, c := newScenario(t, vars...)
	c.connect("ada", token(t, adaID, time.Hour), "websocket")
	c.connect("bob", token(t, bobID, time.Hour), "polling")
	return db, srv, c
}

// TestServeEndToEnd runs the scenario of issue 4: five users in three
// calendars, sockets over websocket, polling and polling-with-upgrade, and
// SQL writes of every kind of cdc/derive/EVENTS.md; every socket must receive
// exactly its events with the right payloads, in commit order. Along the way:
// a membership accepted mid-stream adds the member's sockets to the room
// without join:calendar; a removed member gets nothing of the calendar after
// the removal, neither from the same transaction nor from the next commit; a
// deleted calendar sends nothing after calendar:deleted; join:calendar is
// checked against the current state; a token that expires closes its socket
// and the reconnect is refused with "Authentication error: token expired".
func TestServeEndToEnd(t *testing.T) {
	db, _, c := newScenario(t)

	// Sockets: ada has two (one per transport), the others one each.
	const adaWS, adaPoll, bob, cyd, dan, eve = "ada-ws", "ada-poll", "bob", "cyd", "dan", "eve"
	users := map[string]string{adaWS: adaID, adaPoll: adaID, bob: bobID, cyd: cydID, dan: danID, eve: eveID}
	transports := map[string][]string{
		adaWS: {"websocket"}, adaPoll: {"polling"}, bob: nil, cyd: {"websocket"}, dan: {"polling"}, eve: nil,
	}
	for _, id := range []string{adaWS, adaPoll, bob, cyd, dan, eve} {
		r := c.connect(id, token(t, users[id], time.Hour), transports[id]...)
		if r.Recovered || r.PID == "" {
			t.Fatalf("%s: first connect %+v: want a pid and recovered false", id, r)
		}
	}
	// A short-lived token: its socket is closed when it expires, whatever
	// the transport.
	expiring := token(t, cydID, 3*time.Second)
	c.connect("exp-ws", expiring, "websocket")
	c.connect("exp-poll", expiring, "polling")

	x := newExpectations()
	calA := []string{adaWS, adaPoll, bob}
	calB := []string{cyd, bob}
	calC := []string{dan}
	assignment := func(assignee, prev string, skipped bool, cal string) map[string]any {
		f := map[string]any{"event_id": evt10, "assigned_to_user_id": nil, "previous_assigned_to_user_id": nil,
			"is_skipped": skipped, "start_time": eventStart, "end_time": eventEnd, "event_calendar_id": cal}
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
	db.exec(insertEventSQL(evt10, soccer, "Game", bobID))
	x.to(calA, schema.EventCreated, ref(evt10, "Game", soccer))
	x.to(calA, schema.EventAssigned, assignment(bobID, "", false, soccer))
	db.exec(`UPDATE events SET title = 'Big game', location = 'Field 2' WHERE id = $1`, evt10)
	x.to(calA, schema.EventUpdated, map[string]any{"event_id": evt10, "event_title": "Big game", "changed": []string{"title", "location"}})
	db.exec(`UPDATE events SET assigned_to_user_id = NULL WHERE id = $1`, evt10)
	x.to(calA, schema.EventUnassigned, assignment("", bobID, false, soccer))
	db.exec(`UPDATE events SET assigned_to_user_id = $2, description = 'Bring water' WHERE id = $1`, evt10, adaID)
	x.to(calA, schema.EventAssigned, assignment(adaID, "", false, soccer))
	x.to(calA, schema.EventUpdated, map[string]any{"event_id": evt10, "changed": []string{"description"}})
	db.exec(`UPDATE events SET is_skipped = true WHERE id = $1`, evt10)
	x.to(calA, schema.EventAssigned, assignment(adaID, adaID, true, soccer))
	db.exec(`UPDATE events SET version = version + 1, updated_at = now(), sync_in_progress = true, last_modified = now() WHERE id = $1`, evt10)
	db.exec(`BEGIN; ` + insertEventSQL(evt13, soccer, "Rolled back", "") + `; ROLLBACK`)
	db.exec(`UPDATE events SET event_calendar_id = $2 WHERE id = $1`, evt10, piano)
	x.to(calA, schema.EventDeleted, ref(evt10, "Big game", soccer))
	x.to(calB, schema.EventCreated, ref(evt10, "Big game", piano))
	db.exec(`DELETE FROM events WHERE id = $1`, evt10)
	x.to(calB, schema.EventDeleted, ref(evt10, "Big game", piano))

	// §4.3 calendars: a sync window, a failed sync, a rename.
	db.exec(`UPDATE event_calendars SET sync_in_progress = true WHERE id = $1`, soccer)
	db.exec(insertEventSQL(evt11, soccer, "Synced", ""))
	x.to(calA, schema.EventCreated, ref(evt11, "Synced", soccer))
	db.exec(`UPDATE events SET title = 'Practice (moved)' WHERE id = $1`, practice)
	x.to(calA, schema.EventUpdated, map[string]any{"event_id": practice, "changed": []string{"title"}})
	db.exec(`UPDATE event_calendars SET sync_in_progress = false, last_sync_at = now(), last_sync_status = 'success' WHERE id = $1`, soccer)
	x.to(calA, schema.CalendarSynced, map[string]any{"calendar_id": soccer, "calendar_name": "Soccer",
		"events_created": 1, "events_updated": 1, "events_deleted": 0})
	db.exec(`UPDATE event_calendars SET last_sync_at = now(), last_sync_status = 'error', last_sync_error = 'ICS feed returned 404' WHERE id = $1`, piano)
	x.to(calB, schema.CalendarSyncFailed, map[string]any{"calendar_id": piano, "calendar_name": "Piano", "error": "ICS feed returned 404"})
	db.exec(`UPDATE event_calendars SET name = 'Swimming', color = '#00FF00' WHERE id = $1`, swim)
	x.to(calC, schema.CalendarUpdated, map[string]any{"calendar_id": swim, "calendar_name": "Swimming", "changed": []string{"name", "color"}})

	// §4.4 supplemental events: a conflict across calendars A and B.
	db.exec(`DELETE FROM supplemental_events WHERE (parent_event_id = $1 AND type = 'return') OR (parent_event_id = $2 AND type = 'departure')`, practice, lesson)
	conflict := map[string]any{"event1_id": practice, "event2_id": lesson, "reason": "same_location"}
	x.to(calA, schema.ConflictResolved, conflict)
	x.to(calB, schema.ConflictResolved, conflict)

	// §4.7 explicit events.
	db.exec(`SELECT koordi_realtime.emit('calendar:' || $1::text, 'event:reminder', jsonb_build_object('minutes', 15))`, piano)
	x.to(calB, "event:reminder", map[string]any{"minutes": 15})
	db.exec(`BEGIN; SELECT koordi_realtime.emit('calendar:` + piano + `', 'event:reminder', '{"minutes": 99}'); ROLLBACK`)

	// §4.2 memberships. An invitation reaches the invited user only; its
	// acceptance adds eve's socket to Swim's room without join:calendar, so
	// she gets member:added and the next event of the calendar.
	db.exec(`INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, status, invited_by_user_id)
		VALUES ('d1000000-0000-4000-8000-000000000001', $1, 'eve@example.com', 'tok-eve', 'pending', $2)`, swim, danID)
	x.to([]string{eve}, schema.InvitationReceived, map[string]any{"calendar_id": swim, "calendar_name": "Swimming",
		"inviter_name": "Dan", "invited_email": "eve@example.com"})
	// An invitation to an email no user has, and its withdrawal: nothing.
	db.exec(`INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, status, invited_by_user_id)
		VALUES ('d1000000-0000-4000-8000-000000000002', $1, 'nobody@example.com', 'tok-nobody', 'pending', $2)`, swim, danID)
	db.exec(`DELETE FROM event_calendar_memberships WHERE id = 'd1000000-0000-4000-8000-000000000002'`)
	db.exec(`UPDATE event_calendar_memberships SET status = 'accepted', user_id = $1, responded_at = now() WHERE id = 'd1000000-0000-4000-8000-000000000001'`, eveID)
	calC = []string{dan, eve}
	x.to(calC, schema.MemberAdded, member(swim, eveID, "eve@example.com", "Eve"))
	db.exec(insertEventSQL(evt12, swim, "Laps", ""))
	x.to(calC, schema.EventCreated, ref(evt12, "Laps", swim))

	// bob leaves Soccer; an event committed right after (next commit, no
	// pause) must not reach him. He leaves Piano in the same transaction as
	// an event of Piano, which must not reach him either. He gets each
	// member:removed once, through his user room.
	db.exec(`DELETE FROM event_calendar_memberships WHERE event_calendar_id = $1 AND user_id = $2`, soccer, bobID)
	db.exec(insertEventSQL(evt13, soccer, "After bob", ""))
	bobA := member(soccer, bobID, "bob@example.com", "Bob")
	x.to([]string{adaWS, adaPoll}, schema.MemberRemoved, bobA)
	x.to([]string{bob}, schema.MemberRemoved, bobA)
	x.to([]string{adaWS, adaPoll}, schema.EventCreated, ref(evt13, "After bob", soccer))
	db.exec(`BEGIN;
		UPDATE event_calendar_memberships SET status = 'declined' WHERE event_calendar_id = '` + piano + `' AND user_id = '` + bobID + `';
		` + insertEventSQL(evt14, piano, "Without bob", "") + `;
		COMMIT`)
	bobB := member(piano, bobID, "bob@example.com", "Bob")
	x.to([]string{cyd}, schema.MemberRemoved, bobB)
	x.to([]string{bob}, schema.MemberRemoved, bobB)
	x.to([]string{cyd}, schema.EventCreated, ref(evt14, "Without bob", piano))

	// join:calendar is checked against the state the stream keeps: once
	// bob has been told of his removals, he is refused; ada is accepted
	// (she is in the room already).
	c.waitReceived(bob, schema.MemberRemoved, 2)
	if code := c.joinCalendar(bob, soccer); code != gateway.CodeForbidden {
		t.Errorf("bob join:calendar Soccer after his removal: %q, want %s", code, gateway.CodeForbidden)
	}
	if code := c.joinCalendar(adaWS, soccer); code != "" {
		t.Errorf("ada join:calendar Soccer: refused with %s", code)
	}

	// §4.6: a rename and a membership in one transaction carry the new name.
	db.exec(`BEGIN; UPDATE users SET name = 'Daniel' WHERE id = '` + danID + `'; ` + acceptedSQL(soccer, danID, adaID) + `; COMMIT`)
	calA = []string{adaWS, adaPoll, dan}
	x.to(calA, schema.MemberAdded, member(soccer, danID, "dan@example.com", "Daniel"))

	// A deleted calendar: calendar:deleted (nothing for the cascaded rows),
	// then nothing, even an explicit event to its room committed right after.
	db.exec(`DELETE FROM event_calendars WHERE id = $1`, swim)
	x.to(calC, schema.CalendarDeleted, map[string]any{"calendar_id": swim, "calendar_name": "Swimming"})
	db.exec(`SELECT koordi_realtime.emit('calendar:' || $1::text, 'event:reminder', '{"minutes": 1}')`, swim)
	c.waitEvent(dan, "calendar:deleted", func(ev socketEvent) bool { return ev.Event == schema.CalendarDeleted })
	if code := c.joinCalendar(dan, swim); code != gateway.CodeForbidden {
		t.Errorf("dan join:calendar of the deleted calendar: %q, want %s", code, gateway.CodeForbidden)
	}

	db.emitFence(1, adaID, bobID, cydID, danID, eveID)
	all := []string{adaWS, adaPoll, bob, cyd, dan, eve}
	for _, sockets := range [][]string{{adaWS, adaPoll}, {bob}, {cyd}, {dan}, {eve}} {
		x.to(sockets, fence, map[string]any{"n": 1}) // one event per user room
	}
	c.waitFence(1, all...)
	x.check(c)

	// The expiring token: both sockets are closed at the transport level,
	// reconnect, and are refused; no further connect follows.
	for _, id := range []string{"exp-ws", "exp-poll"} {
		c.waitRefused(id, "Authentication error: token expired")
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

// TestServeCrashRecovery stops serve while a writer commits about one
// event every 10 ms, and starts it again on the same port: with SIGKILL (a
// crash: no goodbye, no last confirmation) and with SIGTERM (a deploy: exit
// 0). Both sockets, connected before, reconnect by themselves to the new
// process with socket.recovered === true (connection state recovery with the
// pid the old process issued and the last offset received) and receive every
// commit, including those made while no process ran, in commit order;
// repeats are allowed only as exact repeats (same offset). The new process
// rebuilds its replay window from the WAL the slot retained (the default 2m
// window).
func TestServeCrashRecovery(t *testing.T) {
	for _, how := range []string{"SIGKILL", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			db, srv, c := newStreamScenario(t)
			w := startWriter(t, db, practice, 500)
			for _, id := range []string{"ada", "bob"} {
				c.waitReceived(id, schema.EventUpdated, 150)
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
			for _, id := range []string{"ada", "bob"} {
				r := c.waitConnect(id, 2)
				if !r.Recovered {
					t.Errorf("%s reconnected after %s with recovered = false (pid %s): missed events cannot be replayed", id, how, r.PID)
				}
				w.waitLast(c, id)
				repeats := w.check(c, id)
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
// the fast shutdown is still blocked after shutdownBound, the test
// reports that as a bug, then kills serve (which releases PostgreSQL) and
// starts it again, and still requires that nothing was lost.
func TestServePostgresRestart(t *testing.T) {
	for _, mode := range []string{"immediate", "fast"} {
		t.Run(mode, func(t *testing.T) {
			db, srv, c := newStreamScenario(t)
			w := startWriter(t, db, practice, 300)
			for _, id := range []string{"ada", "bob"} {
				c.waitReceived(id, schema.EventUpdated, 100)
			}
			restarted := make(chan error, 1)
			go func() { restarted <- cluster.Restart(context.Background(), mode) }()
			killed := false
			select {
			case err := <-restarted:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(shutdownBound):
				t.Errorf("BUG: PostgreSQL %s shutdown still blocked after %s: serve's WAL sender waits for a flush "+
					"confirmation that trails by the replay window (REPLAY_WINDOW); killing serve to release it", mode, shutdownBound)
				srv.kill()
				if err := <-restarted; err != nil {
					t.Fatal(err)
				}
				srv.start()
				killed = true
			}
			w.wait(t)
			for _, id := range []string{"ada", "bob"} {
				w.waitLast(c, id)
				repeats := w.check(c, id)
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

// shutdownBound is how long a PostgreSQL shutdown may wait for serve.
const shutdownBound = 15 * time.Second

// TestServeGracefulStop sends SIGTERM to serve with sockets connected over
// websocket and polling: it exits 0 within its shutdown grace, the sockets
// see "transport close" (a reason socket.io-client reconnects on), the slot's
// confirmed_flush_lsn has advanced past the last delivered commit, and the
// sockets reconnect by themselves to the successor on the same port and get
// its events. The replay window is 1s here, because the confirmed position
// trails the newest hand-off by the window; the default 2m
// would keep it at the slot's start for the whole test.
func TestServeGracefulStop(t *testing.T) {
	db, srv, c := newStreamScenario(t, "REPLAY_WINDOW=1s")
	slot := db.slot("serve")
	before := db.confirmedLSN(slot)
	for i := 0; i < 20; i++ {
		db.exec(`UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("w-%04d", i), practice)
	}
	for _, id := range []string{"ada", "bob"} {
		c.waitReceived(id, schema.EventUpdated, 20)
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
		c.waitReport(id, "disconnect", "disconnected", func(nodeReport) bool { return true })
		if d := c.of(id, "disconnect"); d[0].Reason != "transport close" {
			t.Errorf("%s: disconnect reason %q, want transport close", id, d[0].Reason)
		}
	}
	// The WAL sender applies the last status update asynchronously.
	var after uint64
	deadline := time.Now().Add(10 * time.Second)
	for after = db.confirmedLSN(slot); after <= lastLSN && time.Now().Before(deadline); after = db.confirmedLSN(slot) {
		time.Sleep(20 * time.Millisecond)
	}
	if after <= lastLSN || after <= before {
		t.Errorf("confirmed_flush_lsn %X after SIGTERM (was %X at start); want past the last delivered commit %X", after, before, lastLSN)
	}
	if !strings.Contains(srv.log(), "stopped") {
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
	db.exec(`UPDATE events SET title = 'after restart' WHERE id = $1`, practice)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "the successor's event", func(ev socketEvent) bool {
			return ev.Event == schema.EventUpdated && strings.Contains(string(ev.Data), `"after restart"`)
		})
	}
}

// TestServeCrashMembershipChanges kills serve, changes memberships while it
// is down, and starts it again: every socket recovers (recovered === true)
// and gets what it missed under its rooms as of each event: the member
// removed while serve was down gets nothing of that calendar committed after
// the removal, only member:removed through his user room; the member added
// gets member:added and what followed, not the event committed just before
// her membership; the others get everything of their calendars, each exactly
// once, in commit order.
func TestServeCrashMembershipChanges(t *testing.T) {
	db, srv, c := newScenario(t)
	const ada, bob, cyd, eve = "ada", "bob", "cyd", "eve"
	c.connect(ada, token(t, adaID, time.Hour), "websocket")
	c.connect(bob, token(t, bobID, time.Hour), "polling")
	c.connect(cyd, token(t, cydID, time.Hour))
	c.connect(eve, token(t, eveID, time.Hour), "websocket")

	x := newExpectations()
	ref := func(id, title, cal string) map[string]any {
		return map[string]any{"event_id": id, "event_title": title, "event_calendar_id": cal}
	}
	db.exec(insertEventSQL(evt10, soccer, "Before", ""))
	x.to([]string{ada, bob}, schema.EventCreated, ref(evt10, "Before", soccer))
	db.exec(`SELECT koordi_realtime.emit('user:' || $1::text, 'e2e:hello', '{}')`, eveID)
	x.to([]string{eve}, "e2e:hello", map[string]any{})
	db.emitFence(1, adaID, bobID, cydID)
	for _, s := range [][]string{{ada}, {bob}, {cyd}} {
		x.to(s, fence, map[string]any{"n": 1})
	}
	c.waitFence(1, ada, bob, cyd)
	c.waitEvent(eve, "hello", func(ev socketEvent) bool { return ev.Event == "e2e:hello" })

	srv.kill()
	db.exec(insertEventSQL(evt11, piano, "Before eve", ""))
	x.to([]string{cyd, bob}, schema.EventCreated, ref(evt11, "Before eve", piano))
	db.exec(acceptedSQL(piano, eveID, cydID))
	x.to([]string{cyd, bob, eve}, schema.MemberAdded, map[string]any{"calendar_id": piano, "user_id": eveID, "user_name": "Eve"})
	db.exec(`DELETE FROM event_calendar_memberships WHERE event_calendar_id = $1 AND user_id = $2`, soccer, bobID)
	bobA := map[string]any{"calendar_id": soccer, "user_id": bobID, "user_name": "Bob"}
	x.to([]string{ada}, schema.MemberRemoved, bobA)
	x.to([]string{bob}, schema.MemberRemoved, bobA)
	db.exec(insertEventSQL(evt12, soccer, "After bob", ""))
	x.to([]string{ada}, schema.EventCreated, ref(evt12, "After bob", soccer))
	db.exec(insertEventSQL(evt13, piano, "After eve", ""))
	x.to([]string{cyd, bob, eve}, schema.EventCreated, ref(evt13, "After eve", piano))
	srv.start()

	for _, id := range []string{ada, bob, cyd, eve} {
		if r := c.waitConnect(id, 2); !r.Recovered {
			t.Errorf("%s reconnected with recovered = false", id)
		}
	}
	db.exec(insertEventSQL(evt14, soccer, "Live", ""))
	x.to([]string{ada}, schema.EventCreated, ref(evt14, "Live", soccer))
	db.emitFence(2, adaID, bobID, cydID, eveID)
	for _, s := range [][]string{{ada}, {bob}, {cyd}, {eve}} {
		x.to(s, fence, map[string]any{"n": 2})
	}
	c.waitFence(2, ada, bob, cyd, eve)

	x.check(c)
}

// TestServeSlotInvalidated: while serve is down, PostgreSQL invalidates its
// slot (max_slot_wal_keep_size exceeded), so the commits made meanwhile are
// lost to it. The next serve says so in its log, recreates the slot and
// streams on; the sockets from before the gap reconnect with
// recovered = false and get sync:reset {reason}, so they refetch instead of
// trusting stale state; later commits reach
// them.
func TestServeSlotInvalidated(t *testing.T) {
	db, srv, c := newStreamScenario(t)
	slot := db.slot("serve")
	db.exec(`UPDATE events SET title = 'before' WHERE id = $1`, practice)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "before", func(ev socketEvent) bool { return strings.Contains(string(ev.Data), `"before"`) })
	}
	srv.kill()

	db.exec(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	db.exec(`SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		ctx := context.Background()
		if c, err := pgx.Connect(ctx, db.url); err == nil {
			_, _ = c.Exec(ctx, `ALTER SYSTEM RESET max_slot_wal_keep_size`)
			_, _ = c.Exec(ctx, `SELECT pg_reload_conf()`)
			c.Close(ctx)
		}
	})
	db.exec(`UPDATE events SET title = 'lost' WHERE id = $1`, practice)
	status := ""
	for i := 0; i < 20 && status != "lost"; i++ {
		db.exec(`UPDATE events SET version = version + 1 WHERE id = $1`, practice)
		db.exec(`SELECT pg_switch_wal()`)
		db.exec(`CHECKPOINT`)
		if err := db.conn.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status); err != nil {
			t.Fatal(err)
		}
	}
	if status != "lost" {
		t.Fatalf("slot %s: wal_status %q, could not invalidate it", slot, status)
	}

	srv.start()
	if !strings.Contains(srv.log(), "invalidated") {
		t.Errorf("serve did not say that its slot was invalidated")
	}
	for _, id := range []string{"ada", "bob"} {
		r := c.waitConnect(id, 2)
		if r.Recovered {
			t.Errorf("%s recovered across a gap in the stream", id)
		}
	}
	db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "after", func(ev socketEvent) bool { return strings.Contains(string(ev.Data), `"after"`) })
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
	db, _, c := newScenario(t)
	ids := []string{"ws", "poll", "upgrade"}
	c.connect("ws", token(t, adaID, time.Hour), "websocket")
	c.connect("poll", token(t, bobID, time.Hour), "polling")
	c.connect("upgrade", token(t, adaID, time.Hour))

	const drops = 3
	w := startWriter(t, db, practice, 400)
	for round := 1; round <= drops; round++ {
		for _, id := range ids {
			c.waitReceived(id, schema.EventUpdated, 80*round)
			c.drop(id)
			if r := c.waitConnect(id, round+1); !r.Recovered {
				t.Errorf("%s: reconnect %d not recovered", id, round)
			}
		}
	}
	w.wait(t)
	for _, id := range ids {
		w.waitLast(c, id)
		if repeats := w.check(c, id); repeats != 0 {
			t.Errorf("%s received %d events twice", id, repeats)
		}
		if d := c.of(id, "disconnect"); len(d) != drops {
			t.Errorf("%s: %d disconnects, want %d: %+v", id, len(d), drops, d)
		}
	}
}

// TestServeEndpoints checks the operability surface of a running serve
// after real traffic: /healthz, /readyz once caught up, and
// /metrics counting the sockets by transport, the refused CONNECT, the
// derived and sent events, the commit-to-send latency and the replication
// positions.
func TestServeEndpoints(t *testing.T) {
	db, srv, c := newStreamScenario(t)
	c.connectAsync("forged", token(t, adaID, time.Hour)+"x", "websocket")
	c.waitRefused("forged", "Authentication error: invalid token")
	const n = 50
	for i := 0; i < n; i++ {
		db.exec(`UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("w-%04d", i), practice)
	}
	for _, id := range []string{"ada", "bob"} {
		c.waitReceived(id, schema.EventUpdated, n)
	}

	get := func(path string) (int, string) { t.Helper(); return httpGet(t, srv.url()+path) }
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
// every event:created exactly once, in commit order, catching up from the
// window when its queue is full. (BULK_EVENTS is raised above the
// transaction: by default a room would get one sync:reset instead, see
// TestServeBulkUpdate.) A socket that reconnects on the way must recover.
func TestServeLargeTransaction(t *testing.T) {
	db, _, c := newStreamScenario(t, "BULK_EVENTS=5000")
	const n = 3000
	db.exec(fmt.Sprintf(`INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time)
		SELECT '%s', 'bulk-' || i, 'bulk-' || lpad(i::text, 5, '0'), '%s', '%s' FROM generate_series(0, %d) AS i`, soccer, eventStart, eventEnd, n-1))
	for _, id := range []string{"ada", "bob"} {
		c.waitReceived(id, schema.EventCreated, n)
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
