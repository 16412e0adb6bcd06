package main

// End-to-end tests of the faults operators meet (issue 15): a restart with
// a backlog, a bulk UPDATE, an admin changing replica identity or the
// publication, a slot dropped while the service was stopped. Real serve,
// real PostgreSQL, the unmodified socket.io-client.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

// titles commits n autocommitted title updates of practice, "<prefix><i>".
func titles(db *testDB, prefix string, from, to int) {
	db.t.Helper()
	for i := from; i < to; i++ {
		db.exec(`UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("%s%d", prefix, i), practice)
	}
}

// title is an event:updated's event_title.
func title(ev socketEvent) string {
	var p struct {
		Title string `json:"event_title"`
	}
	_ = json.Unmarshal(ev.Data, &p)
	return p.Title
}

// resets lists the reasons of the sync:reset socket id received.
func resets(c *testClients, id string) []string {
	var out []string
	for _, ev := range c.events(id) {
		if ev.Event == schema.SyncReset {
			var p schema.Reset
			_ = json.Unmarshal(ev.Data, &p)
			out = append(out, p.Reason)
		}
	}
	return out
}

// checkOrdered fails unless socket id received every offset once, in
// increasing order.
func checkOrdered(t *testing.T, c *testClients, id string) {
	t.Helper()
	var last schema.Offset
	for i, ev := range c.events(id) {
		if ev.Offset.Compare(last) <= 0 {
			t.Fatalf("%s: event %d (%s %s) at offset %s after %s: sent twice or backwards", id, i, ev.Event, title(ev), ev.Offset, last)
		}
		last = ev.Offset
	}
}

// TestServeRestartWithBacklog: after a kill -9 with commits in the replay
// window and more made while the service was down, sockets are let in only
// once the stream has reached the WAL written before the start: a socket
// that connects meanwhile gets no event committed before it connected, and
// the recovering sockets get every commit exactly once, in order.
func TestServeRestartWithBacklog(t *testing.T) {
	db, srv, c := newStreamScenario(t)
	titles(db, "w", 0, 3000)
	c.waitEvent("ada", "w2999", func(ev socketEvent) bool { return title(ev) == "w2999" })
	srv.kill()
	titles(db, "d", 0, 2000)
	// More to decode before the end of the backlog (in a calendar none of
	// these sockets sees).
	db.exec(`INSERT INTO events (id, event_calendar_id, ics_uid, title, description, start_time, end_time, updated_at)
		SELECT gen_random_uuid(), $1, 'swim-' || i, 'x', repeat('x', 2000), now(), now(), now() FROM generate_series(1, 900) i`, swim)

	// The successor, and a fresh socket dialling it from the first moment.
	srv.runs++
	srv.proc = startProc(t, fmt.Sprintf("serve run %d", srv.runs), "", srv.env, "serve")
	// Retrying every few milliseconds, as many browsers together would.
	c.do(map[string]any{"op": "connect", "id": "fresh", "token": token(t, adaID, time.Hour), "transports": []string{"websocket"},
		"reconnectionDelay": 5, "reconnectionDelayMax": 10, "reconnectionAttempts": "Infinity"})
	c.waitConnect("fresh", 1)
	db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	for _, id := range []string{"fresh", "ada", "bob"} {
		c.waitEvent(id, "after", func(ev socketEvent) bool { return title(ev) == "after" })
	}
	for _, ev := range c.events("fresh") {
		if title(ev) != "after" {
			t.Fatalf("fresh socket got %q (%s), committed before it connected, as a live event", title(ev), ev.Offset)
		}
	}
	for _, id := range []string{"ada", "bob"} {
		if r := c.waitConnect(id, 2); !r.Recovered {
			t.Fatalf("%s did not recover", id)
		}
		checkOrdered(t, c, id)
		seen := map[string]int{}
		for _, ev := range c.events(id) {
			if ev.Event == schema.EventUpdated {
				seen[title(ev)]++
			}
		}
		for _, want := range []string{"w0", "w2999", "d0", "d1999", "after"} {
			if seen[want] != 1 {
				t.Errorf("%s got %q %d times, want once", id, want, seen[want])
			}
		}
		if n := len(seen); n != 3000+2000+1 {
			t.Errorf("%s got %d distinct commits, want %d", id, n, 5001)
		}
	}
}

// TestServeBulkUpdate: one UPDATE of more events of a calendar than
// BULK_EVENTS gives that calendar's sockets one sync:reset {bulk_change}
// instead, while another calendar of the same transaction, under the bound,
// gets every event; nothing is dropped silently.
func TestServeBulkUpdate(t *testing.T) {
	db, _, c := newScenario(t, "BULK_EVENTS=100")
	c.connect("ada", token(t, adaID, time.Hour), "websocket") // Soccer
	c.connect("cyd", token(t, cydID, time.Hour), "websocket") // Piano
	db.exec(`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time, updated_at)
		SELECT gen_random_uuid(), $1, 'bulk-' || i, 'x', now(), now(), now() FROM generate_series(1, 150) i`, soccer)
	db.exec(`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time, updated_at)
		SELECT gen_random_uuid(), $1, 'small-' || i, 'x', now(), now(), now() FROM generate_series(1, 60) i`, piano)
	c.waitReceived("cyd", schema.EventCreated, 60)
	db.exec(`UPDATE events SET title = 'renamed' WHERE ics_uid LIKE 'bulk-%' OR ics_uid LIKE 'small-%'`)
	db.emitFence(1, adaID, cydID)
	c.waitFence(1, "ada", "cyd")
	updated := func(id string) int {
		n := 0
		for _, ev := range c.events(id) {
			if ev.Event == schema.EventUpdated {
				n++
			}
		}
		return n
	}
	if got := resets(c, "ada"); len(got) != 2 || got[0] != "bulk_change" || got[1] != "bulk_change" {
		t.Errorf("ada (150 created, then 150 updated in Soccer): sync:reset %v, want bulk_change for each transaction", got)
	}
	if n := updated("ada"); n != 0 {
		t.Errorf("ada got %d event:updated of a bulk change", n)
	}
	if got := resets(c, "cyd"); len(got) != 0 {
		t.Errorf("cyd (60 in Piano, under the bound): sync:reset %v", got)
	}
	if n := updated("cyd"); n != 60 {
		t.Errorf("cyd got %d event:updated, want 60", n)
	}
}

// TestServeReplicaIdentityDefault: REPLICA IDENTITY DEFAULT set under a
// running service never leaks a removed member into a calendar and never
// loses a change silently (the room gets sync:reset where it cannot be
// derived); it is reported (/readyz 503), and a replication reconnect
// meanwhile does not stop the service.
func TestServeReplicaIdentityDefault(t *testing.T) {
	db, srv, c := newStreamScenario(t, "TABLE_CHECK_INTERVAL=200ms")
	db.exec(`ALTER TABLE event_calendar_memberships REPLICA IDENTITY DEFAULT`)
	db.exec(`ALTER TABLE events REPLICA IDENTITY DEFAULT`)
	waitReadyz(t, srv, http.StatusServiceUnavailable, "replica identity")

	// A reconnect with the tables so: serve streams on.
	db.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, db.slot("serve"))
	db.exec(`DELETE FROM event_calendar_memberships WHERE event_calendar_id = $1 AND user_id = $2`, soccer, bobID)
	c.waitEvent("bob", "member:removed", func(ev socketEvent) bool { return ev.Event == schema.MemberRemoved })
	db.exec(`UPDATE events SET assigned_to_user_id = $1 WHERE id = $2`, adaID, practice)
	c.waitEvent("ada", "sync:reset", func(ev socketEvent) bool { return ev.Event == schema.SyncReset })
	if got := resets(c, "ada"); len(got) != 1 || got[0] != "replica_identity" {
		t.Errorf("ada: sync:reset %v, want replica_identity", got)
	}
	db.emitFence(1, adaID, bobID)
	c.waitFence(1, "ada", "bob")
	for _, ev := range c.events("bob") {
		if ev.Event == schema.SyncReset || ev.Event == schema.EventAssigned {
			t.Errorf("bob, removed from Soccer, got %s of it", ev.Event)
		}
	}
	if !srv.proc.running() {
		t.Fatal("serve exited")
	}
	db.setup()
	waitReadyz(t, srv, http.StatusOK, "ready")
}

// TestServeTableOutOfPublication: a watched table taken out of the
// publication is reported (/readyz 503, an error line); when it is back,
// sockets get sync:reset {publication_changed}, and events flow again.
func TestServeTableOutOfPublication(t *testing.T) {
	db, srv, c := newStreamScenario(t, "TABLE_CHECK_INTERVAL=200ms")
	db.exec(`ALTER PUBLICATION koordi_realtime DROP TABLE events`)
	waitReadyz(t, srv, http.StatusServiceUnavailable, "does not carry events")
	db.exec(`UPDATE events SET title = 'unseen' WHERE id = $1`, practice)
	db.exec(`ALTER PUBLICATION koordi_realtime ADD TABLE events`)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "sync:reset", func(ev socketEvent) bool { return ev.Event == schema.SyncReset })
		if got := resets(c, id); len(got) != 1 || got[0] != "publication_changed" {
			t.Errorf("%s: sync:reset %v, want publication_changed", id, got)
		}
	}
	waitReadyz(t, srv, http.StatusOK, "ready")
	db.exec(`UPDATE events SET title = 'seen' WHERE id = $1`, practice)
	c.waitEvent("ada", "seen", func(ev socketEvent) bool { return title(ev) == "seen" })
	if !strings.Contains(srv.log(), "watched table cannot be streamed fully") {
		t.Error("no error line for the table")
	}
}

// TestServePublicationRecreated: DROP PUBLICATION then setup under a
// running service: it keeps running and its sockets connected, streams past
// the gap, and sends sync:reset {publication_recreated}.
func TestServePublicationRecreated(t *testing.T) {
	db, srv, c := newStreamScenario(t)
	db.exec(`DROP PUBLICATION koordi_realtime`)
	db.exec(`UPDATE events SET title = 'in the gap' WHERE id = $1`, practice)
	waitReadyz(t, srv, http.StatusServiceUnavailable, "not streaming")
	// The error names the database's objects (and, on a failed login, its
	// role and address): the log has it, not a page anyone may read.
	if _, body, err := fetch(srv.url() + "/readyz"); err != nil || strings.Contains(body, "SQLSTATE") || strings.Contains(body, "koordi_realtime") {
		t.Errorf("/readyz says %q (%v): the replication error belongs in the log", body, err)
	}
	db.setup()
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "sync:reset", func(ev socketEvent) bool { return ev.Event == schema.SyncReset })
		if got := resets(c, id); len(got) != 1 || got[0] != "publication_recreated" {
			t.Errorf("%s: sync:reset %v, want publication_recreated", id, got)
		}
		if n := len(c.of(id, "connect")); n != 1 {
			t.Errorf("%s connected %d times: the sockets should have stayed", id, n)
		}
	}
	db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	c.waitEvent("ada", "after", func(ev socketEvent) bool { return title(ev) == "after" })
	if !srv.proc.running() {
		t.Fatal("serve exited")
	}
}

// TestServeSlotDroppedWhileStopped: a slot dropped while serve was stopped
// is a gap: sessions of the earlier process reconnect with sync:reset, not
// recovered, and serve says so.
func TestServeSlotDroppedWhileStopped(t *testing.T) {
	db, srv, c := newStreamScenario(t)
	db.exec(`UPDATE events SET title = 'before' WHERE id = $1`, practice)
	c.waitEvent("ada", "before", func(ev socketEvent) bool { return title(ev) == "before" })
	if err, _ := srv.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	db.dropSlot(db.slot("serve"))
	db.exec(`UPDATE events SET title = 'lost' WHERE id = $1`, practice)
	srv.start()
	for _, id := range []string{"ada", "bob"} {
		if r := c.waitConnect(id, 2); r.Recovered {
			t.Errorf("%s recovered across a dropped slot", id)
		}
		c.waitEvent(id, "sync:reset", func(ev socketEvent) bool { return ev.Event == schema.SyncReset })
	}
	if !strings.Contains(srv.log(), "sessions from before a gap") {
		t.Error("serve did not warn about sessions from before the gap")
	}
}

// TestServeRecoveryRoomsAsOfEvents: a member added while her socket was away
// is replayed that calendar's events from her join on, not before.
func TestServeRecoveryRoomsAsOfEvents(t *testing.T) {
	db, srv, c := newScenario(t)
	c.connect("dan", token(t, danID, time.Hour), "websocket") // Swim only
	if err, _ := srv.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	db.exec(`UPDATE events SET title = 'before-join' WHERE id = $1`, practice)
	db.exec(acceptedSQL(soccer, danID, adaID))
	db.exec(`UPDATE events SET title = 'after-join' WHERE id = $1`, practice)
	srv.start()
	if r := c.waitConnect("dan", 2); !r.Recovered {
		t.Fatal("dan did not recover")
	}
	c.waitEvent("dan", "after-join", func(ev socketEvent) bool { return title(ev) == "after-join" })
	for _, ev := range c.events("dan") {
		if title(ev) == "before-join" {
			t.Fatal("dan was replayed an event of Soccer from before he joined it")
		}
	}
	if len(c.of("dan", "event")) < 2 {
		t.Fatal("dan should have got member:added and the event after it")
	}
}

// waitReadyz waits until /readyz answers code with a body containing want.
func waitReadyz(t *testing.T, srv *testServer, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		got, body, err := fetch(srv.url() + "/readyz")
		if err == nil && got == code && strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q (%v), want %d with %q", got, body, err, code, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ = context.Background
