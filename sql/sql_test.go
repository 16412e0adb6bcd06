package sql_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) { pgcluster.TestMain(m, &cluster) }

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	url := pgcluster.NewDatabase(t, cluster)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestPreflightSaysWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); !errors.Is(err, ksql.ErrMissingTable) {
		t.Fatalf("empty database: got %v, want ErrMissingTable", err)
	}
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); !errors.Is(err, ksql.ErrReplicaIdentity) {
		t.Fatalf("migrated only: got %v, want ErrReplicaIdentity", err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := ksql.Migrate(ctx, conn); err != nil {
			t.Fatalf("migrate #%d: %v", i+2, err)
		}
		if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
			t.Fatalf("setup #%d: %v", i+1, err)
		}
	}
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatalf("after setup: %v", err)
	}
	if err := ksql.Preflight(ctx, conn, "other_pub"); !errors.Is(err, ksql.ErrNoPublication) {
		t.Fatalf("other publication: got %v, want ErrNoPublication", err)
	}
	// A publication that lost a table is repaired by setup.
	if _, err := conn.Exec(ctx, `ALTER PUBLICATION koordi_realtime DROP TABLE events`); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); !errors.Is(err, ksql.ErrNoPublication) {
		t.Fatalf("publication without events: got %v, want ErrNoPublication", err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

// TestEmitSetup: emit is executable by no one but its owner until granted,
// writes no row that stays, and its table is checked like a watched table;
// an emit of an older setup (bare logical messages, executable by PUBLIC) is
// refused by Preflight and replaced by Setup.
func TestEmitSetup(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT koordi_realtime.emit('user:x', 'hello', '{"a":1}')`); err != nil {
		t.Fatalf("emit by its owner: %v", err)
	}
	// A NULL proacl is the default, which grants EXECUTE to PUBLIC (grantee 0).
	var public, rows int
	if err := conn.QueryRow(ctx, `SELECT
		  (SELECT count(*) FROM aclexplode((SELECT coalesce(proacl, acldefault('f', proowner)) FROM pg_proc WHERE oid = 'koordi_realtime.emit(text,text,jsonb)'::regprocedure)) a WHERE a.grantee = 0),
		  (SELECT count(*) FROM koordi_realtime.emitted)`).Scan(&public, &rows); err != nil {
		t.Fatal(err)
	}
	if public != 0 || rows != 0 {
		t.Errorf("PUBLIC holds %d privileges on emit, the table %d rows; want 0 and 0", public, rows)
	}
	// It did write a row (and deleted it), as its owner, with a search_path
	// no caller can plant objects on.
	var inserted, definer bool
	var config []string
	if err := conn.QueryRow(ctx, `SELECT
		  (SELECT last_value >= 1 AND is_called FROM koordi_realtime.emitted_id_seq),
		  p.prosecdef, coalesce(p.proconfig, '{}')
		FROM pg_proc p WHERE p.oid = 'koordi_realtime.emit(text,text,jsonb)'::regprocedure`).Scan(&inserted, &definer, &config); err != nil {
		t.Fatal(err)
	}
	if !inserted || !definer || !slices.Contains(config, "search_path=pg_catalog, pg_temp") {
		t.Errorf("emit: inserted a row %v, SECURITY DEFINER %v, settings %v; want true, true, search_path=pg_catalog, pg_temp", inserted, definer, config)
	}

	if _, err := conn.Exec(ctx, `ALTER PUBLICATION koordi_realtime DROP TABLE koordi_realtime.emitted`); err != nil {
		t.Fatal(err)
	}
	problems, err := ksql.CheckTables(ctx, conn, "koordi_realtime")
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Table != "koordi_realtime.emitted" || problems[0].Problem() != "not_published" {
		t.Fatalf("emit table out of the publication: problems %v, want koordi_realtime.emitted not_published", problems)
	}

	// What setup made before emit needed a grant.
	if _, err := conn.Exec(ctx, `CREATE OR REPLACE FUNCTION koordi_realtime.emit(room text, event text, payload jsonb)
		RETURNS void LANGUAGE sql VOLATILE SECURITY INVOKER AS $fn$
		  SELECT FROM pg_logical_emit_message(true, 'koordi_realtime',
		    jsonb_build_object('room', room, 'event', event, 'data', payload)::text) $fn$;
		GRANT EXECUTE ON FUNCTION koordi_realtime.emit(text, text, jsonb) TO PUBLIC`); err != nil {
		t.Fatal(err)
	}
	if err := ksql.PreflightStream(ctx, conn, "koordi_realtime"); !errors.Is(err, ksql.ErrNoEmitFunction) {
		t.Fatalf("an older emit: got %v, want ErrNoEmitFunction", err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatalf("after setup again: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM aclexplode((SELECT coalesce(proacl, acldefault('f', proowner)) FROM pg_proc WHERE oid = 'koordi_realtime.emit(text,text,jsonb)'::regprocedure)) a WHERE a.grantee = 0`).Scan(&public); err != nil {
		t.Fatal(err)
	}
	if public != 0 {
		t.Errorf("after setup again PUBLIC holds %d privileges on emit, want 0", public)
	}
}

func TestPreflightRefusesWALLevelReplica(t *testing.T) {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Settings: map[string]string{"wal_level": "replica"}})
	if err != nil {
		pgcluster.Require(t, nil)
	}
	defer c.Stop()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := ksql.Preflight(ctx, conn, "koordi_realtime"); !errors.Is(err, ksql.ErrWALLevel) {
		t.Fatalf("got %v, want ErrWALLevel", err)
	}
}

// TestSetupRefusesPlantedSchema: a koordi_realtime schema created before the
// first setup by a role setup's role is not a member of is refused, with
// its owner named, and nothing is created in it.
func TestSetupRefusesPlantedSchema(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	role := fmt.Sprintf("planter_%d", time.Now().UnixNano())
	for _, q := range []string{
		`CREATE ROLE ` + role,
		`GRANT CREATE ON DATABASE ` + pgx.Identifier{conn.Config().Database}.Sanitize() + ` TO ` + role,
		`SET ROLE ` + role,
		`CREATE SCHEMA koordi_realtime`,
		`RESET ROLE`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS koordi_realtime CASCADE; DROP OWNED BY `+role+`; DROP ROLE `+role)
	})
	// The test runs setup as a superuser, as operators often do: a
	// superuser counts as a member of every role, which must not make a
	// planted schema its own.
	err := ksql.Setup(ctx, conn, "koordi_realtime")
	if !errors.Is(err, ksql.ErrForeignOwner) || !strings.Contains(err.Error(), role) {
		t.Fatalf("setup on a planted schema: %v, want ErrForeignOwner naming %s", err, role)
	}
	var objects int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'koordi_realtime'`).Scan(&objects); err != nil {
		t.Fatal(err)
	}
	if objects != 0 {
		t.Fatalf("setup created %d relations in the planted schema", objects)
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA koordi_realtime`); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatalf("setup once the planted schema is gone: %v", err)
	}
	// A table planted in setup's own schema by a role given CREATE on it.
	for _, q := range []string{
		`DROP TABLE koordi_realtime.emitted CASCADE`,
		`GRANT USAGE, CREATE ON SCHEMA koordi_realtime TO ` + role,
		`SET ROLE ` + role,
		`CREATE TABLE koordi_realtime.emitted (id bigint, message text)`,
		`RESET ROLE`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	err = ksql.Setup(ctx, conn, "koordi_realtime")
	if !errors.Is(err, ksql.ErrForeignOwner) || !strings.Contains(err.Error(), "table koordi_realtime.emitted") {
		t.Fatalf("setup on a planted table: %v, want ErrForeignOwner for the table", err)
	}
}
