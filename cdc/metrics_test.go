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
