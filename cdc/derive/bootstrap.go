package derive

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier is what Bootstrap needs; *pgx.Conn and pgx.Tx satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Bootstrap queries: one per table, every column cast to text so that the
// raw values are the same bytes in text and binary result formats. Only the
// named columns are read, so tables may carry any others.
const (
	qUsers       = `SELECT id::text, name::text, email::text FROM users`
	qCalendars   = `SELECT id::text, name::text, sync_in_progress::text FROM event_calendars`
	qMemberships = `SELECT id::text, event_calendar_id::text, user_id::text, status::text FROM event_calendar_memberships`
	qEvents      = `SELECT id::text, event_calendar_id::text FROM events`
)

// Bootstrap (re)loads the state — users, calendars with their open sync
// windows (sync_in_progress = true, counting from zero), memberships and the
// event → calendar index — replacing what was held, and forgets the pending
// half of a cross-transaction conflict resolution. It streams each table
// once and builds the new state aside, so on error the old state stays.
// Like Derive, it must not run concurrently with Derive.
func (d *Deriver) Bootstrap(ctx context.Context, q Querier) error {
	n := newState()
	err := scan(ctx, q, qUsers, 3, func(v [][]byte) {
		if id, ok := parseUIDBytes(v[0]); ok {
			n.setUser(id, string(v[1]), string(v[2]))
		}
	})
	if err != nil {
		return fmt.Errorf("bootstrap users: %w", err)
	}
	err = scan(ctx, q, qCalendars, 3, func(v [][]byte) {
		if id, ok := parseUIDBytes(v[0]); ok {
			c := n.calendar(id)
			c.name = string(v[1])
			c.window.open = v[2] != nil && boolText(string(v[2]))
		}
	})
	if err != nil {
		return fmt.Errorf("bootstrap calendars: %w", err)
	}
	err = scan(ctx, q, qMemberships, 4, func(v [][]byte) {
		id, ok := parseUIDBytes(v[0])
		if !ok {
			return
		}
		m := membership{status: parseStatus(string(v[3]))}
		if m.cal, ok = parseUIDBytes(v[1]); !ok {
			return
		}
		m.user, m.hasUser = parseUIDBytes(v[2])
		n.setMember(id, m)
	})
	if err != nil {
		return fmt.Errorf("bootstrap memberships: %w", err)
	}
	err = scan(ctx, q, qEvents, 2, func(v [][]byte) {
		id, ok1 := parseUIDBytes(v[0])
		cal, ok2 := parseUIDBytes(v[1])
		if ok1 && ok2 {
			n.events[id] = n.calNum(cal)
		}
	})
	if err != nil {
		return fmt.Errorf("bootstrap events: %w", err)
	}
	d.st.replace(n)
	// The stream restarts from the new state's position: a returns-only
	// transaction from before must not pair across that point.
	d.pending = pendingReturn{}
	d.log.Info("derivation state bootstrapped",
		"users", len(n.users), "calendars", len(n.calendars),
		"memberships", len(n.members), "events", len(n.events))
	return nil
}

// scan runs one query and hands each row's raw values to fn. The byte
// slices are only valid during fn.
func scan(ctx context.Context, q Querier, sql string, cols int, fn func([][]byte)) error {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		v := rows.RawValues()
		if len(v) < cols {
			return fmt.Errorf("query returned %d columns, want %d", len(v), cols)
		}
		fn(v)
	}
	return rows.Err()
}
