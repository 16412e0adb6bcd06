package pgcluster_test

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	pgcluster.TestMain(m, &cluster, func() error { return goleak.Find() })
}

func dbName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// slotsOf lists the replication slots of database db.
func slotsOf(t *testing.T, db string) []string {
	t.Helper()
	conn := pgcluster.Connect(t, cluster.ConnString("postgres"))
	rows, err := conn.Query(context.Background(), `SELECT slot_name FROM pg_replication_slots WHERE database = $1 ORDER BY slot_name`, db)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func createSlot(t *testing.T, conn *pgx.Conn, name string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name); err != nil {
		t.Fatal(err)
	}
}

// stream creates slot name in the database of dbURL and streams from it
// until the returned function is called: an active slot.
func stream(t *testing.T, dbURL, name string) (stop func()) {
	t.Helper()
	ctx := context.Background()
	if _, err := pgcluster.Connect(t, dbURL).Exec(ctx, `CREATE PUBLICATION p`); err != nil {
		t.Fatal(err)
	}
	repl, err := pgconn.Connect(ctx, dbURL+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pglogrepl.CreateReplicationSlot(ctx, repl, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(ctx, repl, name, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'p'"},
	}); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			_ = repl.Close(ctx)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestDropInactiveSlots: the slots of the database nobody streams from are
// dropped; one in use is left alone (and dropped once released, within the
// wait), and so is every slot of another database.
func TestDropInactiveSlots(t *testing.T) {
	ctx := context.Background()
	mine, other := pgcluster.NewDatabase(t, cluster), pgcluster.NewDatabase(t, cluster)
	createSlot(t, pgcluster.Connect(t, mine), "left_behind")
	createSlot(t, pgcluster.Connect(t, other), "another_tests")
	stop := stream(t, mine, "streaming")

	dropped, busy, err := cluster.DropInactiveSlots(ctx, dbName(t, mine), 0)
	if err != nil || !slices.Equal(dropped, []string{"left_behind"}) || !slices.Equal(busy, []string{"streaming"}) {
		t.Fatalf("dropped %v, busy %v, %v; want [left_behind], [streaming]", dropped, busy, err)
	}
	if got := slotsOf(t, dbName(t, mine)); !slices.Equal(got, []string{"streaming"}) {
		t.Fatalf("slots left: %v", got)
	}
	if got := slotsOf(t, dbName(t, other)); !slices.Equal(got, []string{"another_tests"}) {
		t.Fatalf("another database's slots: %v", got)
	}

	// Released while the cleanup waits: dropped too.
	time.AfterFunc(200*time.Millisecond, stop)
	dropped, busy, err = cluster.DropInactiveSlots(ctx, dbName(t, mine), 10*time.Second)
	if err != nil || !slices.Equal(dropped, []string{"streaming"}) || len(busy) != 0 {
		t.Fatalf("after the release: dropped %v, busy %v, %v", dropped, busy, err)
	}
}

// TestNewDatabaseDropsSlots: a test's database has its inactive slots
// dropped when the test ends, so tests do not use up max_replication_slots.
func TestNewDatabaseDropsSlots(t *testing.T) {
	var db string
	t.Run("a test leaving slots", func(t *testing.T) {
		dbURL := pgcluster.NewDatabase(t, cluster)
		db = dbName(t, dbURL)
		conn := pgcluster.Connect(t, dbURL)
		createSlot(t, conn, "first")
		createSlot(t, conn, "second")
	})
	if got := slotsOf(t, db); len(got) != 0 {
		t.Fatalf("slots left after the test: %v", got)
	}
}
