package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// runOnce runs a command in-process and returns its exit code and stderr.
func runOnce(vars map[string]string, args ...string) (int, string) {
	var stdout, stderr syncBuffer
	code := run(context.Background(), envOf(vars, &stdout, &stderr), args)
	return code, stderr.String()
}

// roleFor creates a login role named after db's database, dropped with it:
// roles are cluster-wide. attrs are CREATE ROLE's (e.g. "REPLICATION").
func roleFor(t *testing.T, db *testDB, prefix, attrs string) (name, url string) {
	t.Helper()
	name = db.slot(prefix)
	db.exec(`CREATE ROLE ` + name + ` LOGIN ` + attrs)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), db.url)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), `DROP OWNED BY `+name+`; DROP ROLE `+name); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		t.Fatal(err)
	}
	return name, strings.Replace(db.url, "//"+cfg.User+"@", "//"+name+"@", 1)
}

// TestServeChecksBeforeListening: serve checks the database before it binds
// its port, so an error a user can fix is its one line of output — no
// "listening" first — with the remedy, each cause said once. The port is
// held by the test: a serve that bound before checking would fail with
// "address already in use" instead.
func TestServeChecksBeforeListening(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	base := map[string]string{"JWT_SECRET": testSecret, "LISTEN_ADDR": held.Addr().String()}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	notSetUp := newTestDB(t) // migrated, setup never run
	ready := newTestDB(t)
	ready.setup()
	noRepl, noReplURL := roleFor(t, ready, "norepl", "")
	ready.exec(`GRANT SELECT ON users, event_calendars, event_calendar_memberships, events, supplemental_events TO ` + noRepl)
	_, noReadURL := roleFor(t, ready, "noread", "REPLICATION")
	neither, neitherURL := roleFor(t, ready, "neither", "")
	// A serve streaming from a slot: a second single node on it is refused
	// before it listens.
	streaming := newTestDB(t)
	streaming.setup()
	first := startServer(t, streaming)
	busySlot := strings.TrimPrefix(first.env[slices.IndexFunc(first.env, func(kv string) bool { return strings.HasPrefix(kv, "SLOT_NAME=") })], "SLOT_NAME=")

	for _, tc := range []struct {
		name string
		vars map[string]string
		want []string
	}{
		{"unreachable", with("DATABASE_URL", "postgres://nobody@127.0.0.1:1/koordi?connect_timeout=2"),
			[]string{"cannot connect to PostgreSQL at 127.0.0.1:1/koordi as nobody: connection refused"}},
		{"not set up", with("DATABASE_URL", notSetUp.url), []string{"run `koordi-realtime setup`"}},
		{"no REPLICATION", with("DATABASE_URL", noReplURL), []string{"may not replicate", "have a superuser run ALTER ROLE " + noRepl + " REPLICATION"}},
		{"no SELECT", with("DATABASE_URL", noReadURL), []string{"cannot read users, event_calendars", "GRANT SELECT ON users"}},
		{"neither", with("DATABASE_URL", neitherURL), []string{"ALTER ROLE " + neither + " REPLICATION", "GRANT SELECT ON users"}},
		{"slot in use", with("DATABASE_URL", streaming.url, "SLOT_NAME", busySlot), []string{"slot \"" + busySlot + "\" is streaming to backend pid", "stop the other koordi-realtime"}},
	} {
		code, out := runOnce(tc.vars, "serve")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		ok := code == 2 && len(lines) == 1 && !strings.Contains(out, "listening") && strings.Count(out, "refused") <= 1
		for _, w := range tc.want {
			ok = ok && strings.Contains(lines[0], w)
		}
		if !ok {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 2 and one line containing %q", tc.name, code, out, tc.want)
		}
	}
}

// TestSetupAsNonOwner: setup run by a role that does not own Koordi's
// tables says to run it as their owner, in one line that names setup once.
func TestSetupAsNonOwner(t *testing.T) {
	pgcluster.Require(t, cluster)
	db := newTestDB(t)
	role, url := roleFor(t, db, "notowner", "")
	db.exec(`GRANT CREATE ON DATABASE ` + pgx.Identifier{db.conn.Config().Database}.Sanitize() + ` TO ` + role)
	code, out := runOnce(map[string]string{"DATABASE_URL": url}, "setup")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 2 || len(lines) != 1 || strings.Count(lines[0], "setup:") != 1 ||
		!strings.Contains(lines[0], "must be owner of table users") || !strings.Contains(lines[0], "run setup as the owner of Koordi's tables") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and one line naming setup once, with the remedy", code, out)
	}
}

// TestSetupErrorNamesTheGrant: setup refused CREATE on the database says
// the exact GRANT, with this database and role.
func TestSetupErrorNamesTheGrant(t *testing.T) {
	pgcluster.Require(t, cluster)
	db := newTestDB(t)
	err := setupError(context.Background(), db.conn, fmt.Errorf("setup: %w", &pgconn.PgError{Code: "42501", Message: "permission denied for database x"}))
	want := fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", pgx.Identifier{db.conn.Config().Database}.Sanitize(), pgx.Identifier{db.conn.Config().User}.Sanitize())
	if err == nil || !strings.Contains(err.Error(), want) || strings.HasPrefix(err.Error(), "setup:") {
		t.Fatalf("setupError = %v, want the remedy %q", err, want)
	}
}
