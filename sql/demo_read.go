package sql

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ReadDemo reads the demo family as the database has it now, which may no
// longer be as [SeedDemo] left it: each of [DemoUsers] that still exists
// (by id, in that order) with its current name and email and the calendars
// it is an accepted member of, and those calendars with their current
// names and colours (by name). `dev` prints and offers these, so a restart
// after changes shows the truth.
func ReadDemo(ctx context.Context, conn *pgx.Conn) ([]DemoUser, []DemoCalendar, error) {
	ids := make([]string, len(DemoUsers))
	for i, u := range DemoUsers {
		ids[i] = u.ID
	}
	rows, err := conn.Query(ctx, `
		SELECT u.id::text, u.name, u.email,
		       coalesce(array_agg(c.id::text ORDER BY c.name, c.id) FILTER (WHERE c.id IS NOT NULL), '{}')
		FROM unnest($1::uuid[]) WITH ORDINALITY AS d(id, ord)
		JOIN users u ON u.id = d.id
		LEFT JOIN event_calendar_memberships m ON m.user_id = u.id AND m.status = 'accepted'
		LEFT JOIN event_calendars c ON c.id = m.event_calendar_id
		GROUP BY u.id, u.name, u.email, d.ord
		ORDER BY d.ord`, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("read demo users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DemoUser, error) {
		var u DemoUser
		err := r.Scan(&u.ID, &u.Name, &u.Email, &u.Calendars)
		return u, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read demo users: %w", err)
	}
	rows, err = conn.Query(ctx, `
		SELECT DISTINCT c.id::text, c.name, c.color
		FROM event_calendars c JOIN event_calendar_memberships m ON m.event_calendar_id = c.id
		WHERE m.status = 'accepted' AND m.user_id = ANY($1::uuid[])
		ORDER BY c.name, c.id::text`, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("read demo calendars: %w", err)
	}
	cals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DemoCalendar, error) {
		var c DemoCalendar
		err := r.Scan(&c.ID, &c.Name, &c.Color)
		return c, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read demo calendars: %w", err)
	}
	return users, cals, nil
}
