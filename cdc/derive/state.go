package derive

import (
	"slices"
	"strings"
	"sync"
)

// State is what derivation remembers between transactions: user names and
// emails, calendar names and sync windows, memberships, and the event →
// calendar index. It is bootstrapped from the database and then kept current
// by [Deriver.Derive] from the same stream, so payloads never need a query.
//
// Only the accepted-membership index is shared: [State.IsAcceptedMember] and
// [State.AcceptedCalendars] may be called from any goroutine (they take mu for
// reading). Everything else is owned by the goroutine that calls Derive and
// Bootstrap, which is also the only writer of the index.
type State struct {
	// Owned by the Derive goroutine; no lock.
	users     map[uid]user
	byEmail   map[string]uid // email, exactly as stored → user
	calendars map[uid]*calendar
	members   map[uid]membership
	events    map[uid]uint32 // event → calendar number (see calNums)
	calNums   map[uid]uint32 // calendar → number, interned for events
	calIDs    []uid          // number → calendar

	mu       sync.RWMutex
	accepted map[uid][]uid // user → calendars with an accepted membership
}

type user struct{ name, email string }

type calendar struct {
	name   string
	window syncWindow
}

// syncWindow counts the calendar's events changes between sync_in_progress
// turning true and the sync's outcome.
type syncWindow struct {
	open                      bool
	created, updated, deleted int
}

type memberStatus uint8

const (
	statusOther memberStatus = iota
	statusPending
	statusAccepted
	statusDeclined
)

func parseStatus(s string) memberStatus {
	switch s {
	case "pending":
		return statusPending
	case "accepted":
		return statusAccepted
	case "declined":
		return statusDeclined
	}
	return statusOther
}

// membership is one event_calendar_memberships row as far as the rules need
// it. The invited email is not kept: payloads carry the user's current email
// from users, and invitations are derived from the INSERT row itself.
type membership struct {
	cal, user uid
	hasUser   bool
	status    memberStatus
}

func newState() *State {
	return &State{
		users:     make(map[uid]user),
		byEmail:   make(map[string]uid),
		calendars: make(map[uid]*calendar),
		members:   make(map[uid]membership),
		events:    make(map[uid]uint32),
		calNums:   make(map[uid]uint32),
		accepted:  make(map[uid][]uid),
	}
}

// IsAcceptedMember reports whether the user has an accepted membership of the
// calendar, as of the last transaction derived. Ids are uuid strings.
func (s *State) IsAcceptedMember(userID, calendarID string) bool {
	u, ok := parseUID(userID)
	if !ok {
		return false
	}
	c, ok := parseUID(calendarID)
	if !ok {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Contains(s.accepted[u], c)
}

// AcceptedCalendars returns the ids of the calendars the user is an accepted
// member of, sorted, as a fresh slice the caller owns.
func (s *State) AcceptedCalendars(userID string) []string {
	u, ok := parseUID(userID)
	if !ok {
		return nil
	}
	s.mu.RLock()
	cals := s.accepted[u]
	out := make([]string, len(cals))
	for i, c := range cals {
		out[i] = c.String()
	}
	s.mu.RUnlock()
	slices.Sort(out)
	return out
}

func (s *State) addAccepted(u, c uid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cals := s.accepted[u]
	if !slices.Contains(cals, c) {
		s.accepted[u] = append(cals, c)
	}
}

func (s *State) removeAccepted(u, c uid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cals := s.accepted[u]
	i := slices.Index(cals, c)
	if i < 0 {
		return
	}
	if len(cals) == 1 {
		delete(s.accepted, u)
		return
	}
	// Readers copy under the read lock, so the backing array may be edited in place.
	cals[i] = cals[len(cals)-1]
	s.accepted[u] = cals[:len(cals)-1]
}

// setMember records a membership row and keeps the accepted index in step.
func (s *State) setMember(id uid, m membership) {
	if old, ok := s.members[id]; ok && old.status == statusAccepted && old.hasUser {
		s.removeAccepted(old.user, old.cal)
	}
	s.members[id] = m
	if m.status == statusAccepted && m.hasUser {
		s.addAccepted(m.user, m.cal)
	}
}

func (s *State) deleteMember(id uid) {
	if old, ok := s.members[id]; ok {
		if old.status == statusAccepted && old.hasUser {
			s.removeAccepted(old.user, old.cal)
		}
		delete(s.members, id)
	}
}

func (s *State) setUser(id uid, name, email string) {
	// A row's values share one string per tuple (cdc's decoder): kept, a
	// name would hold the whole row alive.
	name, email = strings.Clone(name), strings.Clone(email)
	if old, ok := s.users[id]; ok && old.email != email {
		if s.byEmail[old.email] == id {
			delete(s.byEmail, old.email)
		}
	}
	s.users[id] = user{name: name, email: email}
	if email != "" {
		// Exactly, as Koordi matches an invitation to a user (findUnique
		// by email, and acceptInvitation compares them with !==): a user
		// whose email differs in case, or folds to the same under Unicode
		// case rules, is another user, who could not accept it.
		s.byEmail[email] = id
	}
}

func (s *State) deleteUser(id uid) {
	if old, ok := s.users[id]; ok {
		if s.byEmail[old.email] == id {
			delete(s.byEmail, old.email)
		}
		delete(s.users, id)
	}
}

// calendar returns the calendar's entry, creating an empty one.
func (s *State) calendar(id uid) *calendar {
	c := s.calendars[id]
	if c == nil {
		c = &calendar{}
		s.calendars[id] = c
	}
	return c
}

// calNum interns a calendar id for the event index. Numbers are never reused
// within a State (16 bytes per calendar ever seen); Bootstrap starts afresh.
func (s *State) calNum(id uid) uint32 {
	if n, ok := s.calNums[id]; ok {
		return n
	}
	n := uint32(len(s.calIDs))
	s.calIDs = append(s.calIDs, id)
	s.calNums[id] = n
	return n
}

// eventCalendar returns the calendar of an event known to the index.
func (s *State) eventCalendar(id uid) (uid, bool) {
	n, ok := s.events[id]
	if !ok {
		return uid{}, false
	}
	return s.calIDs[n], true
}

// replace installs a freshly bootstrapped state's contents.
func (s *State) replace(n *State) {
	s.users, s.byEmail, s.calendars = n.users, n.byEmail, n.calendars
	s.members, s.events, s.calNums, s.calIDs = n.members, n.events, n.calNums, n.calIDs
	s.mu.Lock()
	s.accepted = n.accepted
	s.mu.Unlock()
}
