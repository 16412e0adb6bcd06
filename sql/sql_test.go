package sql_test

import (
	"context"
	"errors"
	"testing"

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

func TestEmitWritesALogicalMessage(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT koordi_realtime.emit('user:x', 'hello', '{"a":1}')`); err != nil {
		t.Fatalf("emit: %v", err)
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
