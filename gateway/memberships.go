package gateway

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Memberships answers which calendars a user may listen to. The serve wiring
// may pass an implementation backed by the state it keeps from the stream;
// [PGMemberships] queries Koordi's database.
type Memberships interface {
	// AcceptedCalendars lists the ids of the calendars userID is an accepted
	// member of. It runs once per connect.
	AcceptedCalendars(ctx context.Context, userID string) ([]string, error)
	// IsAcceptedMember reports whether userID is an accepted member of
	// calendarID; it checks join:calendar.
	IsAcceptedMember(ctx context.Context, userID, calendarID string) (bool, error)
}

// PGMemberships implements Memberships over Koordi's
// event_calendar_memberships table.
type PGMemberships struct {
	Pool *pgxpool.Pool
}

// AcceptedCalendars implements Memberships.
func (m PGMemberships) AcceptedCalendars(ctx context.Context, userID string) ([]string, error) {
	rows, err := m.Pool.Query(ctx,
		`SELECT event_calendar_id::text FROM event_calendar_memberships
		  WHERE user_id = $1::uuid AND status = 'accepted' ORDER BY 1`, userID)
	if err != nil {
		return nil, fmt.Errorf("query accepted calendars: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan accepted calendar: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query accepted calendars: %w", err)
	}
	return ids, nil
}

// IsAcceptedMember implements Memberships.
func (m PGMemberships) IsAcceptedMember(ctx context.Context, userID, calendarID string) (bool, error) {
	var ok bool
	err := m.Pool.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM event_calendar_memberships
		  WHERE user_id = $1::uuid AND event_calendar_id = $2::uuid AND status = 'accepted')`,
		userID, calendarID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("query membership: %w", err)
	}
	return ok, nil
}
