package cdc

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetrics checks the counters after one transaction (exposition in
// testdata/metrics.txt) and that the gauges follow the stream.
func TestMetrics(t *testing.T) {
	url, conn := koordiDB(t)
	reg := prometheus.NewRegistry()
	rec := newRecorder()
	r := start(t, Config{ConnString: url, Registerer: reg}, rec, discard)
	waitStreaming(t, r.c)
	exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'A')`, user1)
	tx := rec.waitTx(t, sets("users", "name", "A"))
	waitFor(t, "confirmation", func() bool { return r.c.Status().ConfirmedLSN > tx.CommitLSN })

	f, err := os.Open(filepath.Join("testdata", "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f,
		"koordi_replication_transactions_total", "koordi_replication_reconnects_total", "koordi_replication_skipped_changes_total"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(r.c.m.confirmedLSN); uint64(got) <= tx.CommitLSN {
		t.Fatalf("confirmed LSN gauge %v, want past %X", got, tx.CommitLSN)
	}
	if got := testutil.ToFloat64(r.c.m.receivedLSN); uint64(got) < tx.CommitLSN {
		t.Fatalf("received LSN gauge %v, want at least %X", got, tx.CommitLSN)
	}
	waitFor(t, "caught up", func() bool { return r.c.Status().CaughtUp })
	// The gauge follows the hand-off itself, not the server's next
	// keepalive, which may be half a wal_sender_timeout away: allow only the
	// moment between the two updates.
	for deadline := time.Now().Add(2 * time.Second); testutil.ToFloat64(r.c.m.lagBytes) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lag bytes %v when caught up", testutil.ToFloat64(r.c.m.lagBytes))
		}
	}
	if n, err := testutil.GatherAndCount(reg, "koordi_replication_lag_bytes", "koordi_replication_lag_seconds"); err != nil || n != 2 {
		t.Fatalf("lag gauges: %d, %v", n, err)
	}
}

// TestLagFollowsHandOff: once the newest transaction is handed off, the lag
// gauge reads 0 at once, not at the server's next report. With an hour's
// status interval the consumer answers no keepalive, so PostgreSQL sends
// none after the one it sends when it runs out of WAL, which usually comes
// before the hand-off: only the hand-off itself can bring the gauge to 0.
func TestLagFollowsHandOff(t *testing.T) {
	url, conn := koordiDB(t)
	rec := newRecorder()
	r := start(t, Config{ConnString: url, Registerer: prometheus.NewRegistry(), StatusInterval: time.Hour}, rec, discard)
	waitStreaming(t, r.c)
	for i := range 5 {
		name := string(rune('A' + i))
		exec(t, conn, `INSERT INTO users (id, email, name) VALUES (gen_random_uuid(), $1, $2)`, name+"@example.com", name)
		rec.waitTx(t, sets("users", "name", name))
		waitFor(t, "caught up", func() bool { return r.c.Status().CaughtUp })
		for deadline := time.Now().Add(500 * time.Millisecond); testutil.ToFloat64(r.c.m.lagBytes) != 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("insert %d: lag bytes %v when caught up", i, testutil.ToFloat64(r.c.m.lagBytes))
			}
		}
	}
}
