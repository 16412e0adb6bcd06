package schema

// Event names, exactly as Koordi's front end listens for them.
const (
	EventCreated    = "event:created"
	EventAssigned   = "event:assigned"
	EventUnassigned = "event:unassigned"
	EventUpdated    = "event:updated"
	EventDeleted    = "event:deleted"

	MemberAdded   = "member:added"
	MemberRemoved = "member:removed"

	InvitationReceived = "invitation:received"

	CalendarSynced     = "calendar:synced"
	CalendarSyncFailed = "calendar:sync_failed"
	CalendarUpdated    = "calendar:updated"
	CalendarDeleted    = "calendar:deleted"

	ConflictResolved = "conflict:resolved"

	// SyncReset tells clients that changes may have been lost (the replication
	// slot was invalidated and recreated) and that they must refetch.
	SyncReset = "sync:reset"
)

// Names lists every event the service derives or sends, in a stable order.
// Metrics pre-register a series per name from it.
var Names = []string{
	EventCreated, EventAssigned, EventUnassigned, EventUpdated, EventDeleted,
	MemberAdded, MemberRemoved, InvitationReceived,
	CalendarSynced, CalendarSyncFailed, CalendarUpdated, CalendarDeleted,
	ConflictResolved, SyncReset,
}

// EventRef is the payload of event:created and event:deleted.
type EventRef struct {
	EventID         string `json:"event_id"`
	EventTitle      string `json:"event_title"`
	EventCalendarID string `json:"event_calendar_id"`
	// Sync is true when the change was derived while the calendar's sync
	// window was open (an ICS sync is writing it); the field is omitted
	// otherwise. Clients may fold such changes into calendar:synced.
	Sync bool `json:"sync,omitempty"`
}

// EventAssignment is the payload of event:assigned and event:unassigned.
// Times are RFC 3339 UTC.
type EventAssignment struct {
	EventID                  string  `json:"event_id"`
	EventTitle               string  `json:"event_title"`
	AssignedToUserID         *string `json:"assigned_to_user_id"`
	PreviousAssignedToUserID *string `json:"previous_assigned_to_user_id"`
	IsSkipped                bool    `json:"is_skipped"`
	StartTime                string  `json:"start_time"`
	EndTime                  string  `json:"end_time"`
	EventCalendarID          string  `json:"event_calendar_id"`
	Sync                     bool    `json:"sync,omitempty"` // as in EventRef
}

// EventChange is the payload of event:updated; Changed lists the column names
// whose values differ, in table order.
type EventChange struct {
	EventID         string   `json:"event_id"`
	EventTitle      string   `json:"event_title"`
	EventCalendarID string   `json:"event_calendar_id"`
	Changed         []string `json:"changed"`
	Sync            bool     `json:"sync,omitempty"` // as in EventRef
}

// Member is the payload of member:added and member:removed.
type Member struct {
	CalendarID string `json:"calendar_id"`
	UserID     string `json:"user_id"`
	UserEmail  string `json:"user_email"`
	UserName   string `json:"user_name"`
}

// Invitation is the payload of invitation:received.
type Invitation struct {
	CalendarID   string `json:"calendar_id"`
	CalendarName string `json:"calendar_name"`
	InviterName  string `json:"inviter_name"`
	InvitedEmail string `json:"invited_email"`
}

// CalendarSync is the payload of calendar:synced.
type CalendarSync struct {
	CalendarID    string `json:"calendar_id"`
	CalendarName  string `json:"calendar_name"`
	EventsCreated int    `json:"events_created"`
	EventsUpdated int    `json:"events_updated"`
	EventsDeleted int    `json:"events_deleted"`
}

// CalendarSyncFailure is the payload of calendar:sync_failed.
type CalendarSyncFailure struct {
	CalendarID   string `json:"calendar_id"`
	CalendarName string `json:"calendar_name"`
	Error        string `json:"error"`
}

// CalendarChange is the payload of calendar:updated.
type CalendarChange struct {
	CalendarID   string   `json:"calendar_id"`
	CalendarName string   `json:"calendar_name"`
	Changed      []string `json:"changed"`
}

// CalendarRef is the payload of calendar:deleted.
type CalendarRef struct {
	CalendarID   string `json:"calendar_id"`
	CalendarName string `json:"calendar_name"`
}

// Conflict is the payload of conflict:resolved.
type Conflict struct {
	Event1ID string `json:"event1_id"`
	Event2ID string `json:"event2_id"`
	Reason   string `json:"reason"`
}

// Reset is the payload of sync:reset.
type Reset struct {
	Reason string `json:"reason"`
}

// IsReservedEventName reports whether socket.io-client handles the event
// name itself (connect, disconnect, …): the server never sends one (an
// emitted event with such a name would confuse the client) and a client may
// not emit one.
func IsReservedEventName(name string) bool {
	switch name {
	case "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener":
		return true
	}
	return false
}
