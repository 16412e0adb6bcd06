package cdc

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// envelopes is a sink that keeps every envelope.
type envelopes struct {
	mu  sync.Mutex
	all []schema.Envelope
}

func (e *envelopes) Deliver(_ context.Context, tx schema.Transaction) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, tx.Events...)
	return nil
}

func (e *envelopes) named(names ...string) []schema.Envelope {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []schema.Envelope
	for _, ev := range e.all {
		for _, n := range names {
			if ev.Event == n {
				out = append(out, ev)
			}
		}
	}
	return out
}

// TestPrismaSchema streams from Koordi's schema exactly as its Prisma
// migrations create it (testdata/prisma_schema.sql: quoted identifiers,
// varchar(n), no defaults on ids or updated_at, an extra unwatched table)
// after `setup`, with the real derivation rules.
func TestPrismaSchema(t *testing.T) {
	ddl, err := os.ReadFile("../testdata/prisma_schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	url := pgcluster.NewDatabase(t, cluster)
	conn := dial(t, url)
	exec(t, conn, string(ddl))
	if err := ksql.Setup(context.Background(), conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	sink := &envelopes{}
	r := start(t, Config{ConnString: url}, nil, sink)
	waitStreaming(t, r.c)

	exec(t, conn, `INSERT INTO "users" ("id", "email", "name", "updated_at") VALUES ($1, 'ada@example.com', 'Ada', now()), ($2, 'bob@example.com', 'Bob', now())`, user1, user2)
	exec(t, conn, `INSERT INTO "children" ("id", "name", "updated_at") VALUES ($1, 'Kid', now())`, child)
	exec(t, conn, `INSERT INTO "event_calendars" ("id", "name", "ics_url", "child_id", "owner_id", "updated_at") VALUES ($1, 'Soccer', 'https://example.com/a.ics', $2, $3, now())`, cal1, child, user1)
	exec(t, conn, `INSERT INTO "events" ("id", "event_calendar_id", "ics_uid", "title", "start_time", "end_time", "updated_at") VALUES ($1, $2, 'uid-1', 'Practice', now(), now(), now())`, evt1, cal1)
	exec(t, conn, `INSERT INTO "user_google_event_syncs" ("id", "user_id", "event_id", "google_event_id", "sync_type", "updated_at") VALUES (gen_random_uuid(), $1, $2, 'g1', 'main', now())`, user1, evt1)
	exec(t, conn, `UPDATE "events" SET "assigned_to_user_id" = $1, "version" = "version" + 1, "updated_at" = now() WHERE "id" = $2`, user2, evt1)

	waitFor(t, "event:assigned", func() bool { return len(sink.named(schema.EventAssigned)) > 0 })
	got := sink.named(schema.EventCreated, schema.EventAssigned)
	if len(got) != 2 || got[0].Event != schema.EventCreated || got[1].Event != schema.EventAssigned {
		t.Fatalf("got %+v, want event:created then event:assigned", got)
	}
	for _, ev := range got {
		if ev.Room != schema.CalendarRoom(cal1) {
			t.Fatalf("%s to room %q, want calendar:%s", ev.Event, ev.Room, cal1)
		}
	}
	var assigned map[string]any
	if err := json.Unmarshal(got[1].Data, &assigned); err != nil {
		t.Fatal(err)
	}
	if assigned["assigned_to_user_id"] != user2 || assigned["event_title"] != "Practice" {
		t.Fatalf("event:assigned payload %s", got[1].Data)
	}
}

// TestStateFollowsStream: Consumer.State answers from the derivation state
// as of the last transaction handed off — bootstrapped from the slot's
// snapshot, then kept current by the stream.
func TestStateFollowsStream(t *testing.T) {
	url, conn := koordiDB(t)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'ada@example.com', 'Ada'), ($2, 'bob@example.com', 'Bob')`, user1, user2)
	exec(t, conn, `INSERT INTO children (id, name) VALUES ($1, 'Kid')`, child)
	exec(t, conn, `INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES ($1, 'Soccer', 'x', $2, $3)`, cal1, child, user1)
	exec(t, conn, `INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id)
	               VALUES ($1, $2, 'ada@example.com', 't1', 'accepted', $2)`, cal1, user1)
	sink := &envelopes{}
	r := start(t, Config{ConnString: url}, nil, sink)
	waitStreaming(t, r.c)
	if !r.c.State().IsAcceptedMember(user1, cal1) {
		t.Fatal("bootstrap: ada is not an accepted member")
	}
	exec(t, conn, `INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id)
	               VALUES ($1, $2, 'bob@example.com', 't2', 'accepted', $3)`, cal1, user2, user1)
	waitFor(t, "member:added", func() bool { return len(sink.named(schema.MemberAdded)) == 1 })
	if !r.c.State().IsAcceptedMember(user2, cal1) {
		t.Fatal("bob is not an accepted member after member:added")
	}
	exec(t, conn, `DELETE FROM event_calendar_memberships WHERE event_calendar_id = $1 AND user_id = $2`, cal1, user2)
	waitFor(t, "member:removed", func() bool { return len(sink.named(schema.MemberRemoved)) >= 1 })
	if r.c.State().IsAcceptedMember(user2, cal1) {
		t.Fatal("bob is still an accepted member after member:removed")
	}
}

// TestToastedAssignmentYieldsOneEvent: with the real rules, an
// assignment-only UPDATE of an event whose description is TOASTed yields
// exactly one event:assigned (the unchanged description is neither NULL nor
// a change).
func TestToastedAssignmentYieldsOneEvent(t *testing.T) {
	url, conn := koordiDB(t)
	var txs []schema.Transaction
	var mu sync.Mutex
	sink := SinkFunc(func(_ context.Context, tx schema.Transaction) error {
		mu.Lock()
		defer mu.Unlock()
		txs = append(txs, tx)
		return nil
	})
	r := start(t, Config{ConnString: url}, nil, sink)
	waitStreaming(t, r.c)
	seed(t, func(sql string, args ...any) { exec(t, conn, sql, args...) })
	exec(t, conn, `UPDATE events SET description = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1250)) WHERE id = $1`, evt1)
	exec(t, conn, `UPDATE events SET assigned_to_user_id = $1 WHERE id = $2`, user2, evt1)
	waitFor(t, "event:assigned", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(txs) > 0 && txs[len(txs)-1].Events[0].Event == schema.EventAssigned
	})
	mu.Lock()
	last := txs[len(txs)-1]
	mu.Unlock()
	if len(last.Events) != 1 {
		t.Fatalf("assignment-only update of a TOASTed event: %d events %+v, want one event:assigned", len(last.Events), last.Events)
	}
	requireToasted(t, conn)
}
