package gateway

import "context"

// Memberships answers which calendars a user may listen to. serve passes an
// implementation backed by the state cdc keeps from the replication stream,
// so no connect or join:calendar queries the database; the package example
// shows one over a map.
type Memberships interface {
	// AcceptedCalendars lists the ids of the calendars userID is an accepted
	// member of. It runs once per connect.
	AcceptedCalendars(ctx context.Context, userID string) ([]string, error)
	// IsAcceptedMember reports whether userID is an accepted member of
	// calendarID; it checks join:calendar.
	IsAcceptedMember(ctx context.Context, userID, calendarID string) (bool, error)
}
