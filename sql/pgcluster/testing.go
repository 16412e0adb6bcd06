package pgcluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
)

// TestMain runs a test package's tests against one shared throwaway cluster:
//
//	var cluster *pgcluster.Cluster
//	func TestMain(m *testing.M) {
//		pgcluster.TestMain(m, &cluster, func() error { return goleak.Find() })
//	}
//
// after runs once the tests passed and the cluster is stopped (a goroutine
// leak check, say); an error from it fails the run.
//
// When no PostgreSQL binaries are found the tests run with *cluster nil and
// tests that call [Require] or [NewDatabase] skip — except under CI (CI set),
// where a missing service is a failure, never a skip. Fuzz workers start no
// cluster: fuzz targets must not need one. Nor does listing the tests
// (go test -list, as make fuzz does for every package), which runs none.
func TestMain(m *testing.M, cluster **Cluster, after ...func() error) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	c, err := Start(context.Background(), Config{})
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "pgcluster: %v (PostgreSQL tests skip)\n", err)
		startErr = err
	}
	*cluster = c
	code := m.Run()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
		}
	}
	for _, check := range after {
		if code != 0 {
			break
		}
		if err := check(); err != nil {
			fmt.Fprintf(os.Stderr, "after tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	startErr error
	dbSeq    atomic.Int64
)

// Require returns the shared cluster or skips the test when none could be
// started outside CI.
func Require(t testing.TB, c *Cluster) *Cluster {
	t.Helper()
	if c == nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no PostgreSQL cluster: %v", startErr)
		}
		t.Skipf("no PostgreSQL cluster: %v", startErr)
	}
	return c
}

// slotRelease is how long a test's cleanup waits for the slots of its
// database still in use to be released before dropping the others: the WAL
// sender of a process the test stopped at its end may take a moment to exit.
const slotRelease = 5 * time.Second

// NewDatabase creates a fresh database for one test and returns its URL.
// Replication slots belong to a database, so tests that each use their own
// database never see each other's changes. When the test ends (after the
// cleanups it registers later, which stop its processes) the database's
// inactive slots are dropped, so the cluster's max_replication_slots bounds
// what one test holds at once, not what the package's tests made.
func NewDatabase(t testing.TB, c *Cluster) string {
	t.Helper()
	c = Require(t, c)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	url, err := c.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), slotRelease+15*time.Second)
		defer cancel()
		_, busy, err := c.DropInactiveSlots(ctx, name, slotRelease)
		if err != nil {
			t.Errorf("drop the test database's replication slots: %v", err)
		}
		if len(busy) > 0 {
			// Not a failure of the test: it may stream on purpose until
			// the package ends. Said, since the slot stays.
			t.Logf("replication slots of %s still in use at its end, left: %v", name, busy)
		}
	})
	return url
}

// Connect opens a connection to url for one test; it is closed when the test
// ends.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// NewKoordiDatabase creates a fresh database with Koordi's tables and the
// service's objects (publication "koordi_realtime", replica identity, emit),
// and returns its URL and a connection for the test.
func NewKoordiDatabase(t testing.TB, c *Cluster) (string, *pgx.Conn) {
	t.Helper()
	url := NewDatabase(t, c)
	conn := Connect(t, url)
	ctx := context.Background()
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Setup(ctx, conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	return url, conn
}
