package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// connectAs opens a connection to db as role (the test cluster trusts
// local connections, so only the role changes).
func (db *testDB) connectAs(role string) *pgx.Conn {
	db.t.Helper()
	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		db.t.Fatal(err)
	}
	cfg.User = role
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		db.t.Fatalf("connect as %s: %v", role, err)
	}
	db.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// sqlState is the SQLSTATE of a PostgreSQL error ("" for none or another).
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestOnlyGrantedRolesEmit is issue 14.1 against a running serve, itself
// running as a role with only the README's grants: a role
// without the grant (even with USAGE on the schema) can neither call emit
// nor write its table, and
// the logical decoding message it may write with the service's prefix and
// a well-formed event reaches no socket; a role granted emit (as the
// README's attach step 4 grants it) delivers, and an event over 1 MiB fails
// its caller's statement.
func TestOnlyGrantedRolesEmit(t *testing.T) {
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	db.seedScenario()
	db.setup()
	suffix := db.slot("")[1:] // roles are cluster-wide: one set per test database
	svc, api, mallory := "svc"+suffix, "api"+suffix, "mallory"+suffix
	// The README's attach steps: the service may replicate and read the
	// watched tables, the API may emit, mallory may only connect.
	db.exec(fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION; CREATE ROLE %s LOGIN; CREATE ROLE %s LOGIN;
		GRANT SELECT ON users, event_calendars, event_calendar_memberships, events, supplemental_events TO %[1]s;
		GRANT USAGE ON SCHEMA koordi_realtime TO %[2]s, %[3]s;
		GRANT EXECUTE ON FUNCTION koordi_realtime.emit(text, text, jsonb) TO %[2]s`, svc, api, mallory))
	t.Cleanup(func() {
		ctx := context.Background()
		for _, r := range []string{svc, api, mallory} {
			_, _ = db.conn.Exec(ctx, fmt.Sprintf(`DROP OWNED BY %s; DROP ROLE %[1]s`, r))
		}
	})
	svcURL := strings.Replace(db.url, "://postgres@", "://"+svc+"@", 1)
	if svcURL == db.url {
		t.Fatalf("cannot put the service role into %s", db.url)
	}
	srv := startServer(t, db, "DATABASE_URL="+svcURL)
	c := startClients(t, srv.url())
	c.connect("ada", token(t, adaID, time.Hour), "websocket")
	c.connect("bob", token(t, bobID, time.Hour), "polling")
	ctx := context.Background()
	forged := fmt.Sprintf(`{"room": "user:%s", "event": "invitation:received", "data": {"forged": true}}`, adaID)

	m := db.connectAs(mallory)
	if _, err := m.Exec(ctx, `SELECT pg_logical_emit_message(true, 'koordi_realtime', $1)`, forged); err != nil {
		t.Fatalf("a bare logical message (which every role may write): %v", err)
	}
	if _, err := m.Exec(ctx, `SELECT koordi_realtime.emit($1, 'invitation:received', '{"forged": true}')`, "user:"+adaID); sqlState(err) != "42501" {
		t.Errorf("emit by a role without the grant: %v, want permission denied (42501)", err)
	}
	if _, err := m.Exec(ctx, `INSERT INTO koordi_realtime.emitted (message) VALUES ($1)`, forged); sqlState(err) != "42501" {
		t.Errorf("a direct insert into the emit table: %v, want permission denied (42501)", err)
	}

	a := db.connectAs(api)
	huge := `{"blob": "` + strings.Repeat("x", 1<<20) + `"}`
	if _, err := a.Exec(ctx, `SELECT koordi_realtime.emit($1, 'e2e:huge', $2::jsonb)`, "user:"+adaID, huge); sqlState(err) != "54000" {
		t.Errorf("emit of more than 1 MiB: %v, want program_limit_exceeded (54000)", err)
	}
	if _, err := a.Exec(ctx, `SELECT koordi_realtime.emit($1, 'e2e:granted', '{"n": 1}')`, "user:"+adaID); err != nil {
		t.Fatalf("emit by the granted role: %v", err)
	}
	var left int
	if err := db.conn.QueryRow(ctx, `SELECT count(*) FROM koordi_realtime.emitted`).Scan(&left); err != nil || left != 0 {
		t.Errorf("emit table holds %d rows (%v), want 0: each row is deleted in its own transaction", left, err)
	}

	c.waitReceived("ada", "e2e:granted", 1)
	db.emitFence(1, adaID, bobID)
	c.waitFence(1, "ada", "bob")
	for _, id := range []string{"ada", "bob"} {
		for _, ev := range c.events(id) {
			if ev.Event == "invitation:received" || ev.Event == "e2e:huge" {
				t.Errorf("%s received %s %s: only roles granted emit may make an event", id, ev.Event, ev.Data)
			}
		}
	}
	// The stream is still live after what it ignored.
	db.exec(`UPDATE events SET title = 'After' WHERE id = $1`, practice)
	c.waitEvent("ada", "the update after the forgeries", func(e socketEvent) bool {
		return strings.Contains(string(e.Data), `"After"`)
	})
}
