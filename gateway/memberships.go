package gateway

import (
	"slices"

	"github.com/koordi/koordi-realtime/schema"
)

// view is the gateway's membership state: which calendars each user is an
// accepted member of, as of the transactions published so far. It starts
// from a database snapshot ([Gateway.LoadMemberships]) and follows the room
// moves of every published transaction that snapshot did not see, so connects
// and join:calendar are checked against exactly the memberships that move
// sockets between rooms — with no query, and on every node alike. Guarded by
// index.mu.
type view struct {
	byUser map[schema.UUID][]schema.UUID
	byCal  map[schema.UUID][]schema.UUID
	// calRoom is each calendar's room name, made once and shared by
	// every socket in the room (rooms), instead of a copy per socket; an
	// entry lives while the calendar has members.
	calRoom map[schema.UUID]string
	seen    *schema.TxSnapshot // the snapshot's visibility; nil: none loaded
}

func newView() view {
	return view{byUser: map[schema.UUID][]schema.UUID{}, byCal: map[schema.UUID][]schema.UUID{}, calRoom: map[schema.UUID]string{}}
}

// load replaces the view with a snapshot.
func (v *view) load(s *schema.MembershipSnapshot) {
	*v = newView()
	seen := s.Seen
	v.seen = &seen
	for _, m := range s.Accepted {
		u, ok1 := schema.ParseUUID(m.User)
		c, ok2 := schema.ParseUUID(m.Calendar)
		if ok1 && ok2 {
			v.add(u, c)
		}
	}
}

// saw reports whether the loaded snapshot already holds a transaction's
// changes, so its moves must not be applied again.
func (v *view) saw(xid uint32) bool { return v.seen != nil && xid != 0 && v.seen.Visible(xid) }

func (v *view) add(u, c schema.UUID) {
	if !slices.Contains(v.byUser[u], c) {
		v.byUser[u] = append(v.byUser[u], c)
		v.byCal[c] = append(v.byCal[c], u)
	}
}

func (v *view) remove(u, c schema.UUID) {
	v.byUser[u] = deleteUUID(v.byUser[u], c)
	if len(v.byUser[u]) == 0 {
		delete(v.byUser, u)
	}
	v.byCal[c] = deleteUUID(v.byCal[c], u)
	if len(v.byCal[c]) == 0 {
		delete(v.byCal, c)
		delete(v.calRoom, c)
	}
}

func deleteUUID(s []schema.UUID, x schema.UUID) []schema.UUID {
	if i := slices.Index(s, x); i >= 0 {
		s[i] = s[len(s)-1]
		s = s[:len(s)-1]
	}
	return s
}

// apply follows one move. For a close it returns the users who were members
// of the calendar, which a replay needs to undo the close.
func (v *view) apply(m *schema.Move) (members []string) {
	_, calID, err := schema.ParseRoom(m.Room)
	if err != nil {
		return nil
	}
	c, ok := schema.ParseUUID(calID)
	if !ok {
		return nil
	}
	switch m.Op {
	case schema.MoveJoin, schema.MoveLeave:
		u, ok := schema.ParseUUID(m.User)
		if !ok {
			return nil
		}
		if m.Op == schema.MoveJoin {
			v.add(u, c)
		} else {
			v.remove(u, c)
		}
	case schema.MoveClose:
		for _, u := range slices.Clone(v.byCal[c]) {
			members = append(members, u.String())
			v.remove(u, c)
		}
	}
	return members
}

// rooms returns the rooms a socket of user belongs to: its own and one per
// accepted calendar.
func (v *view) rooms(user string) roomSet {
	u, ok := schema.ParseUUID(user)
	cals := v.byUser[u]
	if !ok {
		cals = nil
	}
	rs := make(roomSet, 1, 1+len(cals))
	rs[0] = schema.UserRoom(user)
	for _, c := range cals {
		room, ok := v.calRoom[c]
		if !ok {
			room = schema.CalendarRoom(c.String())
			v.calRoom[c] = room
		}
		rs = append(rs, room)
	}
	return rs
}

// member reports whether user is an accepted member of calendar (a uuid).
func (v *view) member(user, calendar string) bool {
	u, ok1 := schema.ParseUUID(user)
	c, ok2 := schema.ParseUUID(calendar)
	return ok1 && ok2 && slices.Contains(v.byUser[u], c)
}
