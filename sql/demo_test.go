package sql_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// TestSeedDemo: the demo family matches DemoUsers and DemoCalendars, a
// second seed changes nothing, and every simulation step commits (twice
// around the cycle, so the steps that undo earlier ones run too).
func TestSeedDemo(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgcluster.NewDatabase(t, cluster))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	count := func() (n [4]int) {
		t.Helper()
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM event_calendars),
			(SELECT count(*) FROM event_calendar_memberships), (SELECT count(*) FROM events)`).Scan(&n[0], &n[1], &n[2], &n[3]); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for range 2 {
		if err := ksql.SeedDemo(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	first := count()
	if first[0] != len(ksql.DemoUsers) || first[1] != len(ksql.DemoCalendars) {
		t.Errorf("seeded %v, want %d users and %d calendars", first, len(ksql.DemoUsers), len(ksql.DemoCalendars))
	}
	// A week holds five school days (two runs each) and three soccer days.
	if first[3] != 13 {
		t.Errorf("seeded %d events, want 13", first[3])
	}
	for _, u := range ksql.DemoUsers {
		rows, err := conn.Query(ctx, `SELECT event_calendar_id::text FROM event_calendar_memberships
			WHERE user_id = $1 AND status = 'accepted' ORDER BY event_calendar_id`, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		cals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Sorted(slices.Values(u.Calendars))
		if len(cals) != len(u.Calendars) || !slices.Equal(cals, want) {
			t.Errorf("%s is a member of %v, DemoUsers says %v", u.Name, cals, u.Calendars)
		}
	}
	for n := range 2 * 6 {
		what, err := ksql.DemoStep(ctx, conn, n)
		if err != nil || what == "" {
			t.Fatalf("step %d %q: %v", n, what, err)
		}
	}
	if err := ksql.SeedDemo(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// The simulation keeps one synced event (each sync replaces the last)
	// and one pending invitation (each invitation replaces the last).
	want := [4]int{first[0], first[1], first[2] + 1, first[3] + 1}
	if after := count(); after != want {
		t.Errorf("after two cycles and a reseed: %v, want %v", after, want)
	}
}
