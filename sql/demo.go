package sql

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed demo.sql
var demoSQL string

// DemoUser is a person of the demo family [SeedDemo] writes.
type DemoUser struct {
	ID, Name, Email string
	// Calendars are the ids of the calendars the user is an accepted
	// member of after seeding.
	Calendars []string
}

// DemoCalendar is a calendar of the demo family.
type DemoCalendar struct{ ID, Name, Color string }

// The demo family's fixed ids (see demo.sql).
const (
	DemoAlex   = "d1000000-0000-4000-8000-000000000001"
	DemoSam    = "d1000000-0000-4000-8000-000000000002"
	DemoJordan = "d1000000-0000-4000-8000-000000000003"
	DemoCasey  = "d1000000-0000-4000-8000-000000000004"
	DemoSchool = "d3000000-0000-4000-8000-000000000001"
	DemoSoccer = "d3000000-0000-4000-8000-000000000002"
)

// DemoCalendars are the demo family's calendars.
var DemoCalendars = []DemoCalendar{
	{DemoSchool, "Maya · School", "#3B82F6"},
	{DemoSoccer, "Maya · Soccer", "#10B981"},
}

// DemoUsers are the demo family, as [SeedDemo] leaves them.
var DemoUsers = []DemoUser{
	{DemoAlex, "Alex Rivera", "alex@demo.koordi.app", []string{DemoSchool, DemoSoccer}},
	{DemoSam, "Sam Rivera", "sam@demo.koordi.app", []string{DemoSchool, DemoSoccer}},
	{DemoJordan, "Jordan Lee", "jordan@demo.koordi.app", []string{DemoSoccer}},
	{DemoCasey, "Casey Kim", "casey@demo.koordi.app", nil},
}

// SeedDemo writes the demo family into a migrated database. It is
// idempotent: rows that exist (by id) are left as they are.
func SeedDemo(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, demoSQL); err != nil {
		return fmt.Errorf("seed demo data: %w", err)
	}
	return nil
}

// demoSteps is the cycle [DemoStep] walks through: what a family using
// Koordi does in an afternoon, compressed. Each entry is one or more
// transactions; {N} is the step number, for unique names.
var demoSteps = []struct {
	what string
	txs  []string
}{
	{"Sam takes a school pick-up", []string{`
		UPDATE events SET assigned_to_user_id = CASE WHEN assigned_to_user_id IS DISTINCT FROM '` + DemoSam + `' THEN '` + DemoSam + `'::uuid END,
		       version = version + 1, updated_at = now()
		WHERE id = (SELECT id FROM events WHERE event_calendar_id = '` + DemoSchool + `' AND ics_uid LIKE 'demo-school-pickup-%'
		            ORDER BY start_time OFFSET ({N} / 6) % 5 LIMIT 1)`}},
	{"Jordan volunteers for soccer", []string{`
		UPDATE events SET assigned_to_user_id = CASE WHEN assigned_to_user_id IS NULL THEN '` + DemoJordan + `'::uuid END,
		       version = version + 1, updated_at = now()
		WHERE id = (SELECT id FROM events WHERE event_calendar_id = '` + DemoSoccer + `' AND ics_uid LIKE 'demo-soccer-%'
		            ORDER BY start_time OFFSET ({N} / 6) % 3 LIMIT 1)`}},
	{"the soccer feed syncs (one created, one moved, one removed)", []string{
		`UPDATE event_calendars SET sync_in_progress = true, updated_at = now() WHERE id = '` + DemoSoccer + `'`,
		`DELETE FROM events WHERE event_calendar_id = '` + DemoSoccer + `' AND ics_uid LIKE 'demo-sync-%'`,
		`INSERT INTO events (event_calendar_id, ics_uid, title, location, start_time, end_time)
		 VALUES ('` + DemoSoccer + `', 'demo-sync-' || {N}, 'Team photo', 'Riverside Park, Clubhouse',
		         date_trunc('hour', now()) + interval '2 days', date_trunc('hour', now()) + interval '2 days 30 minutes')`,
		`UPDATE events SET start_time = start_time + CASE WHEN {N} % 2 = 0 THEN interval '15 minutes' ELSE interval '-15 minutes' END,
		       end_time = end_time + CASE WHEN {N} % 2 = 0 THEN interval '15 minutes' ELSE interval '-15 minutes' END,
		       version = version + 1, updated_at = now()
		 WHERE id = (SELECT id FROM events WHERE event_calendar_id = '` + DemoSoccer + `' AND ics_uid LIKE 'demo-soccer-%' ORDER BY start_time LIMIT 1)`,
		`UPDATE event_calendars SET sync_in_progress = false, last_sync_at = now(), last_sync_status = 'success', updated_at = now()
		 WHERE id = '` + DemoSoccer + `'`,
	}},
	{"Alex covers a school drop-off", []string{`
		UPDATE events SET assigned_to_user_id = CASE WHEN assigned_to_user_id IS DISTINCT FROM '` + DemoAlex + `' THEN '` + DemoAlex + `'::uuid END,
		       version = version + 1, updated_at = now()
		WHERE id = (SELECT id FROM events WHERE event_calendar_id = '` + DemoSchool + `' AND ics_uid LIKE 'demo-school-dropoff-%'
		            ORDER BY start_time OFFSET ({N} / 6) % 5 LIMIT 1)`}},
	{"Sam invites Casey to soccer", []string{
		`DELETE FROM event_calendar_memberships WHERE event_calendar_id = '` + DemoSoccer + `' AND invited_email = 'casey@demo.koordi.app' AND status = 'pending'`,
		`INSERT INTO event_calendar_memberships (event_calendar_id, invited_email, invitation_token, status, invited_by_user_id, expires_at)
		 VALUES ('` + DemoSoccer + `', 'casey@demo.koordi.app', 'demo-invite-' || gen_random_uuid(), 'pending', '` + DemoSam + `', now() + interval '7 days')`,
	}},
	{"school moves drop-off location", []string{`
		UPDATE events SET location = CASE WHEN location LIKE 'Lincoln%' THEN 'Lincoln Elementary, side gate (Elm St)' ELSE 'Lincoln Elementary, 123 Oak St' END,
		       version = version + 1, updated_at = now()
		WHERE id = (SELECT id FROM events WHERE event_calendar_id = '` + DemoSchool + `' AND ics_uid LIKE 'demo-school-dropoff-%'
		            ORDER BY start_time OFFSET ({N} / 6) % 5 LIMIT 1)`}},
}

// DemoStep makes the n-th write of the demo simulation (`dev --simulate`)
// and says what it was. Steps cycle through assignments, a calendar sync
// with a create, an update and a delete, an invitation and an event change,
// each as a family would cause it through Koordi. Every transaction commits
// on its own, so each yields its own events.
func DemoStep(ctx context.Context, conn *pgx.Conn, n int) (string, error) {
	step := demoSteps[n%len(demoSteps)]
	for _, tx := range step.txs {
		if _, err := conn.Exec(ctx, strings.ReplaceAll(tx, "{N}", strconv.Itoa(n))); err != nil {
			return step.what, fmt.Errorf("demo step %q: %w", step.what, err)
		}
	}
	return step.what, nil
}
