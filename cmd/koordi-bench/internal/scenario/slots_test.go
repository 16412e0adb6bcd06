package scenario

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// slotState is whether slot exists and is streamed.
func slotState(t *testing.T, url, slot string) (exists, active bool) {
	t.Helper()
	conn := pgcluster.Connect(t, url)
	if err := conn.QueryRow(context.Background(), `SELECT count(*) > 0, coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&exists, &active); err != nil {
		t.Fatal(err)
	}
	return exists, active
}

// TestSlotReader: gateway-pg's reader streams its slot by the time it
// starts; while it streams, dropSlot waits for it and then refuses rather
// than leave a server to start on a slot another reads; once the reader is
// stopped its slot is gone, whatever its walsender took to exit.
func TestSlotReader(t *testing.T) {
	url := pgcluster.NewDatabase(t, pg)
	ctx := context.Background()
	if err := harness.Prepare(ctx, url); err != nil {
		t.Fatal(err)
	}
	const slot = "bench_reader"
	r, err := startSlotReader(ctx, url, slot)
	if err != nil {
		t.Fatal(err)
	}
	if exists, active := slotState(t, url, slot); !exists || !active {
		t.Fatalf("reader started: slot exists %v, active %v", exists, active)
	}
	t0 := time.Now()
	if err := dropSlot(ctx, url, slot); err == nil || !strings.Contains(err.Error(), "still streamed") {
		t.Fatalf("dropSlot of a streamed slot: %v", err)
	}
	if waited := time.Since(t0); waited < slotRelease {
		t.Fatalf("dropSlot gave up on a streamed slot after %s, not %s", waited, slotRelease)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if exists, _ := slotState(t, url, slot); exists {
		t.Fatal("the slot outlived its stopped reader")
	}
	if err := dropSlot(ctx, url, slot); err != nil {
		t.Fatalf("dropSlot of no slot: %v", err)
	}
}
