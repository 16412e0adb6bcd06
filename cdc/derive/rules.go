package derive

import (
	"slices"
	"strings"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// eventDetailColumns are the events columns whose change is an
// event:updated, in table order; "changed" lists them in this order.
var eventDetailColumns = []string{
	"title", "description", "location", "start_time", "end_time", "is_all_day", "is_cancelled",
}

// eventAssignmentColumns are the events columns whose change is an
// event:assigned / event:unassigned.
var eventAssignmentColumns = []string{"assigned_to_user_id", "is_skipped"}

// calendarDetailColumns are the event_calendars columns whose change is a
// calendar:updated, in table order; "changed" lists them in this order.
var calendarDetailColumns = []string{"name", "ics_url", "child_id", "color", "sync_enabled"}

type countKind uint8

const (
	countCreated countKind = iota
	countUpdated
	countDeleted
)

// ---- events (EVENTS.md: events) ----

// eventDiff tells which rule groups an UPDATE of events touches; detail
// column names are appended to changed (nil when none).
func eventDiff(old, new wal.Row) (assignment bool, details []string) {
	for _, col := range eventAssignmentColumns {
		assignment = assignment || changed(old, new, col)
	}
	for _, col := range eventDetailColumns {
		if changed(old, new, col) {
			details = append(details, col)
		}
	}
	return assignment, details
}

// oldEventCalendar is the calendar an event belonged to before a change:
// from the old tuple, or from the index when the old tuple lacks it.
func (d *Deriver) oldEventCalendar(old wal.Row, id string) string {
	if v := old.Get("event_calendar_id"); v.Valid {
		return v.Text
	}
	if v := str(old, "id"); v != "" {
		id = v
	}
	if id, ok := parseUID(id); ok {
		if cal, ok := d.st.eventCalendar(id); ok {
			return cal.String()
		}
	}
	return ""
}

func (d *Deriver) eventChange(c *wal.Change) {
	switch c.Op {
	case wal.OpInsert:
		cal := str(c.New, "event_calendar_id")
		if cal == "" {
			d.log.Warn("events insert without a calendar ignored", "event_id", str(c.New, "id"))
			return
		}
		d.indexEvent(str(c.New, "id"), cal)
		d.eventCreated(c.New, cal)
		d.countEvent(cal, countCreated)

	case wal.OpUpdate:
		oldCal := d.oldEventCalendar(c.Old, str(c.New, "id"))
		newCal := str(c.New, "event_calendar_id")
		if newCal == "" {
			d.log.Warn("events update without a calendar ignored", "event_id", str(c.New, "id"))
			return
		}
		if oldID := str(c.Old, "id"); oldID != "" && oldID != str(c.New, "id") {
			d.unindexEvent(oldID)
		}
		d.indexEvent(str(c.New, "id"), newCal)
		if !c.OldFull {
			// No old row (the table's replica identity is not FULL): what
			// changed cannot be told, so the rooms refetch.
			d.underivable(c.Table, oldCal, newCal)
			return
		}
		if oldCal != "" && newCal != "" && oldCal != newCal {
			// A move is a delete from one room and a create in the other,
			// each marked with its own calendar's sync window.
			d.add(schema.CalendarRoom(oldCal), schema.EventDeleted, marshal(schema.EventRef{
				EventID:         str(c.Old, "id"),
				EventTitle:      str(c.Old, "title"),
				EventCalendarID: oldCal,
				Sync:            d.inSyncWindow(oldCal),
			}))
			d.countEvent(oldCal, countDeleted)
			d.add(schema.CalendarRoom(newCal), schema.EventCreated, marshal(d.eventRef(c.New, newCal)))
			d.countEvent(newCal, countCreated)
			return
		}
		assignment, details := eventDiff(c.Old, c.New)
		if assignment {
			d.eventAssignment(c.New, c.Old, newCal)
		}
		if len(details) > 0 {
			d.add(schema.CalendarRoom(newCal), schema.EventUpdated, marshal(schema.EventChange{
				EventID:         str(c.New, "id"),
				EventTitle:      str(c.New, "title"),
				EventCalendarID: newCal,
				Changed:         details,
				Sync:            d.inSyncWindow(newCal),
			}))
		}
		if assignment || len(details) > 0 {
			d.countEvent(newCal, countUpdated)
		}

	case wal.OpDelete:
		cal := d.oldEventCalendar(c.Old, "")
		d.unindexEvent(str(c.Old, "id"))
		if calID, ok := parseUID(cal); ok && d.deletedCals[calID] {
			return // cascaded from calendar:deleted
		}
		if cal == "" {
			d.log.Warn("events delete without a calendar ignored", "event_id", str(c.Old, "id"))
			return
		}
		if !c.OldFull {
			// A key only: the calendar is known from the index, the
			// title is not — an event:deleted without it would be wrong.
			d.underivable(c.Table, cal)
			d.countEvent(cal, countDeleted)
			return
		}
		d.add(schema.CalendarRoom(cal), schema.EventDeleted, marshal(d.eventRef(c.Old, cal)))
		d.countEvent(cal, countDeleted)
	}
}

// eventRef is the event:created / event:deleted payload of a row of
// calendar cal, marked when cal's sync window is open.
func (d *Deriver) eventRef(r wal.Row, cal string) schema.EventRef {
	return schema.EventRef{EventID: str(r, "id"), EventTitle: str(r, "title"), EventCalendarID: cal, Sync: d.inSyncWindow(cal)}
}

// eventCreated emits event:created, and event:assigned when the new row is
// already assigned.
func (d *Deriver) eventCreated(r wal.Row, cal string) {
	d.add(schema.CalendarRoom(cal), schema.EventCreated, marshal(d.eventRef(r, cal)))
	if valid(r, "assigned_to_user_id") {
		d.eventAssignment(r, wal.Row{}, cal)
	}
}

// eventAssignment emits event:assigned (new assignee set) or
// event:unassigned (none) with the full assignment payload.
func (d *Deriver) eventAssignment(r, old wal.Row, cal string) {
	p := schema.EventAssignment{
		EventID:                  str(r, "id"),
		EventTitle:               str(r, "title"),
		AssignedToUserID:         nullable(r, "assigned_to_user_id"),
		PreviousAssignedToUserID: nullable(old, "assigned_to_user_id"),
		IsSkipped:                boolCol(r, "is_skipped"),
		StartTime:                rfc3339(str(r, "start_time")),
		EndTime:                  rfc3339(str(r, "end_time")),
		EventCalendarID:          cal,
		Sync:                     d.inSyncWindow(cal),
	}
	name := schema.EventUnassigned
	if p.AssignedToUserID != nil {
		name = schema.EventAssigned
	}
	d.add(schema.CalendarRoom(cal), name, marshal(p))
}

func (d *Deriver) indexEvent(id, cal string) {
	e, ok1 := parseUID(id)
	c, ok2 := parseUID(cal)
	if ok1 && ok2 {
		d.st.events[e] = d.st.calNum(c)
	}
}

func (d *Deriver) unindexEvent(id string) {
	if e, ok := parseUID(id); ok {
		delete(d.st.events, e)
	}
}

// openWindow returns the sync window of calendar cal when it is open, else nil.
func (d *Deriver) openWindow(cal string) *syncWindow {
	id, ok := parseUID(cal)
	if !ok {
		return nil
	}
	c := d.st.calendars[id]
	if c == nil || !c.window.open {
		return nil
	}
	return &c.window
}

// inSyncWindow reports whether calendar cal's sync window is open at this
// point of the transaction: its event changes are then marked "sync": true,
// exactly those that calendar:synced counts.
func (d *Deriver) inSyncWindow(cal string) bool { return d.openWindow(cal) != nil }

// countEvent adds an events change to the calendar's open sync window.
func (d *Deriver) countEvent(cal string, k countKind) {
	if w := d.openWindow(cal); w != nil {
		w.add(k)
	}
}

func (w *syncWindow) add(k countKind) {
	switch k {
	case countCreated:
		w.created++
	case countUpdated:
		w.updated++
	case countDeleted:
		w.deleted++
	}
}

// txCounts counts the events changes of calendar cal in the whole
// transaction: the calendar:synced counts when no sync window was seen.
func (d *Deriver) txCounts(tx *wal.Tx, cal string) syncWindow {
	var w syncWindow
	tx.Each(func(c *wal.Change) bool {
		if c.Table != tableEvents {
			return true
		}
		switch c.Op {
		case wal.OpInsert:
			if str(c.New, "event_calendar_id") == cal {
				w.add(countCreated)
			}
		case wal.OpDelete:
			if str(c.Old, "event_calendar_id") == cal {
				w.add(countDeleted)
			}
		case wal.OpUpdate:
			oldCal, newCal := str(c.Old, "event_calendar_id"), str(c.New, "event_calendar_id")
			switch {
			case oldCal != "" && newCal != "" && oldCal != newCal:
				if oldCal == cal {
					w.add(countDeleted)
				}
				if newCal == cal {
					w.add(countCreated)
				}
			case newCal == cal:
				if a, det := eventDiff(c.Old, c.New); a || len(det) > 0 {
					w.add(countUpdated)
				}
			}
		}
		return true
	})
	return w
}

// ---- event_calendars (EVENTS.md: event_calendars) ----

func (d *Deriver) calendarChange(tx *wal.Tx, c *wal.Change) {
	switch c.Op {
	case wal.OpInsert:
		id, ok := parseUID(str(c.New, "id"))
		if !ok {
			return
		}
		if boolCol(c.New, "sync_in_progress") {
			d.st.calendar(id).window = syncWindow{open: true}
		}

	case wal.OpUpdate:
		idText := str(c.New, "id")
		id, ok := parseUID(idText)
		if !ok {
			return
		}
		cal := d.st.calendar(id)
		was := cal.window.open
		if v, ok := c.Old.Lookup("sync_in_progress"); ok {
			was = v.Valid && boolText(v.Text)
		}
		now := was
		if v, ok := c.New.Lookup("sync_in_progress"); ok {
			now = v.Valid && boolText(v.Text)
		}

		if changed(c.Old, c.New, "last_sync_at") {
			switch str(c.New, "last_sync_status") {
			case "success":
				w := cal.window
				if !w.open {
					w = d.txCounts(tx, idText)
				}
				d.add(schema.CalendarRoom(idText), schema.CalendarSynced, marshal(schema.CalendarSync{
					CalendarID:    idText,
					CalendarName:  cal.name,
					EventsCreated: w.created,
					EventsUpdated: w.updated,
					EventsDeleted: w.deleted,
				}))
				cal.window = syncWindow{}
			case "error":
				d.add(schema.CalendarRoom(idText), schema.CalendarSyncFailed, marshal(schema.CalendarSyncFailure{
					CalendarID:   idText,
					CalendarName: cal.name,
					Error:        str(c.New, "last_sync_error"),
				}))
				cal.window = syncWindow{}
			}
		}
		switch {
		case was && !now:
			cal.window = syncWindow{} // the sync ended (or was abandoned) without an outcome
		case !was && now:
			cal.window = syncWindow{open: true}
		}

		var cols []string
		for _, col := range calendarDetailColumns {
			if changed(c.Old, c.New, col) {
				cols = append(cols, col)
			}
		}
		if len(cols) > 0 {
			d.add(schema.CalendarRoom(idText), schema.CalendarUpdated, marshal(schema.CalendarChange{
				CalendarID:   idText,
				CalendarName: cal.name,
				Changed:      cols,
			}))
		}
		if !c.OldFull {
			// Without the old row neither a sync's outcome nor a rename
			// shows: the room refetches.
			d.underivable(c.Table, idText)
		}

	case wal.OpDelete:
		idText := str(c.Old, "id")
		id, ok := parseUID(idText)
		if !ok {
			return
		}
		name := str(c.Old, "name")
		if !c.Old.Has("name") {
			if cal := d.st.calendars[id]; cal != nil {
				name = cal.name
			}
		}
		room := schema.CalendarRoom(idText)
		if d.add(room, schema.CalendarDeleted, marshal(schema.CalendarRef{
			CalendarID:   idText,
			CalendarName: name,
		})) {
			// Its members got calendar:deleted; nothing else reaches them there.
			d.move(schema.MoveClose, "", room)
		}
	}
}

// ---- event_calendar_memberships (EVENTS.md: event_calendar_memberships) ----

// memberRow is a membership tuple as the rules read it; columns the tuple
// lacks (a key-only old tuple) come from the state.
type memberRow struct {
	id        uid
	idOK      bool
	cal, user string
	status    memberStatus
}

func (d *Deriver) memberRow(r wal.Row) memberRow {
	m := memberRow{
		cal:    str(r, "event_calendar_id"),
		user:   str(r, "user_id"),
		status: parseStatus(str(r, "status")),
	}
	m.id, m.idOK = parseUID(str(r, "id"))
	if !r.Has("status") && m.idOK {
		if s, ok := d.st.members[m.id]; ok {
			m.cal, m.status = s.cal.String(), s.status
			if s.hasUser {
				m.user = s.user.String()
			}
		}
	}
	return m
}

func (m memberRow) accepted() bool { return m.status == statusAccepted && m.user != "" && m.cal != "" }

func (m memberRow) state() membership {
	s := membership{status: m.status}
	s.cal, _ = parseUID(m.cal)
	s.user, s.hasUser = parseUID(m.user)
	return s
}

func (d *Deriver) membershipChange(c *wal.Change) {
	switch c.Op {
	case wal.OpInsert:
		m := d.memberRow(c.New)
		if m.idOK {
			d.st.setMember(m.id, m.state())
		}
		switch {
		case m.accepted():
			d.memberEvent(schema.MemberAdded, m, c.New)
		case m.status == statusPending:
			d.invitation(m, c.New)
		}

	case wal.OpUpdate:
		oldRow := c.Old
		if !oldRow.Has("id") {
			// No old tuple (replica identity not FULL): the state knows the row.
			oldRow = wal.RowOf(map[string]wal.Value{"id": c.New.Get("id")})
		}
		o, n := d.memberRow(oldRow), d.memberRow(c.New)
		if o.idOK && o.id != n.id {
			d.st.deleteMember(o.id)
		}
		if n.idOK {
			d.st.setMember(n.id, n.state())
		}
		same := o.cal == n.cal && o.user == n.user
		if o.accepted() && (!n.accepted() || !same) {
			d.memberEvent(schema.MemberRemoved, o, c.Old)
		}
		if n.accepted() && (!o.accepted() || !same) {
			d.memberEvent(schema.MemberAdded, n, c.New)
		}

	case wal.OpDelete:
		m := d.memberRow(c.Old)
		if m.idOK {
			d.st.deleteMember(m.id)
		}
		if calID, ok := parseUID(m.cal); ok && d.deletedCals[calID] {
			// Cascaded from calendar:deleted: no event, but the membership
			// ended, which the close after calendar:deleted says for the
			// sockets and this leave for the record (a replay from before
			// the deletion knows who was a member).
			if _, ok := parseUID(m.user); ok && m.accepted() {
				d.cascadeLeaves = append(d.cascadeLeaves, schema.Move{Op: schema.MoveLeave, User: strings.Clone(m.user), Room: schema.CalendarRoom(m.cal)})
			}
			return
		}
		if m.accepted() {
			d.memberEvent(schema.MemberRemoved, m, c.Old)
		}
	}
}

// placeCascadeLeaves puts the leaves of a deleted calendar's memberships
// just after its close, wherever in the transaction their rows were.
func (d *Deriver) placeCascadeLeaves() {
	for _, l := range d.cascadeLeaves {
		i := slices.IndexFunc(d.moves, func(m schema.Move) bool { return m.Op == schema.MoveClose && m.Room == l.Room })
		if i < 0 {
			continue
		}
		l.At = d.moves[i].At
		j := i + 1
		for j < len(d.moves) && d.moves[j].Op == schema.MoveLeave && d.moves[j].Room == l.Room && d.moves[j].At == l.At {
			j++ // after the leaves placed before it: WAL order
		}
		d.moves = slices.Insert(d.moves, j, l)
	}
}

// memberEvent emits member:added to the calendar room, or member:removed to
// the calendar room and then the user's room. Name and email are the user's
// as of the commit; a user unknown to the state falls back to the invited
// email and an empty name.
func (d *Deriver) memberEvent(event string, m memberRow, r wal.Row) {
	p := schema.Member{CalendarID: m.cal, UserID: m.user, UserEmail: str(r, "invited_email")}
	if u, ok := parseUID(m.user); ok {
		if rec, ok := d.st.users[u]; ok {
			p.UserName, p.UserEmail = rec.name, rec.email
		}
	}
	data := marshal(p)
	room := schema.CalendarRoom(m.cal)
	_, userOK := parseUID(m.user)
	_, calOK := parseUID(m.cal)
	if userOK && calOK {
		// The user's sockets join before member:added, so they receive it
		// and every later event of the calendar; they leave before the
		// calendar room's member:removed, so nothing later reaches them
		// there (they get it through their own room).
		op := schema.MoveJoin
		if event == schema.MemberRemoved {
			op = schema.MoveLeave
		}
		d.move(op, m.user, room)
	}
	d.add(room, event, data)
	if event == schema.MemberRemoved {
		d.add(schema.UserRoom(m.user), event, data)
	}
}

// invitation emits invitation:received to the invited user's room, if a
// user with that email exists (as of the commit).
func (d *Deriver) invitation(m memberRow, r wal.Row) {
	email := str(r, "invited_email")
	if email == "" {
		return
	}
	to, ok := d.st.byEmail[email]
	if !ok {
		d.holes(1) // a user with that email may exist when this is decoded again
		return
	}
	p := schema.Invitation{CalendarID: m.cal, InvitedEmail: email}
	if cal, ok := parseUID(m.cal); ok {
		if c := d.st.calendars[cal]; c != nil {
			p.CalendarName = c.name
		}
	}
	if inviter, ok := parseUID(str(r, "invited_by_user_id")); ok {
		p.InviterName = d.st.users[inviter].name
	}
	d.add(schema.UserRoom(to.String()), schema.InvitationReceived, marshal(p))
}

// ---- supplemental_events (EVENTS.md: conflict:resolved) ----

func (d *Deriver) supplementalChange(c *wal.Change) {
	if c.Op != wal.OpDelete {
		return
	}
	parent := str(c.Old, "parent_event_id")
	p, ok := parseUID(parent)
	if !ok || d.deletedEvts[p] {
		return // cascaded from its event's deletion: not a conflict resolution
	}
	switch str(c.Old, "type") {
	case "return":
		d.returns = append(d.returns, parent)
	case "departure":
		d.departures = append(d.departures, parent)
	}
}

// conflicts pairs the transaction's deleted returns and departures: each
// event A whose only change in tx is the deletion of `return` rows, in WAL
// order, with the next event B whose only change is the deletion of
// `departure` rows. Each pair is one conflict:resolved to A's calendar room
// and, when different, B's.
//
// "Only" is what keeps Koordi's clean-ups out. Removing a member
// (invitationService.removeMember) deletes every trip of the events
// reassigned from that member, and updates those events' rows, in one
// transaction; events whose earlier resolutions had left only a return or
// only a departure would otherwise pair with each other there.
func (d *Deriver) conflicts(tx *wal.Tx) {
	if len(d.returns) == 0 || len(d.departures) == 0 {
		return
	}
	other := d.otherwiseChanged(tx)
	as, bs := onlyHalf(d.returns, other), onlyHalf(d.departures, other)
	for i := range min(len(as), len(bs)) {
		d.conflict(as[i], bs[i]) // never one event: it would be in other
	}
}

// onlyHalf returns the events of ids (parent_event_id texts) not in other,
// each once, in order.
func onlyHalf(ids []string, other map[uid]bool) []string {
	var out []string
	seen := make(map[uid]bool)
	for _, p := range ids {
		id, ok := parseUID(p)
		if !ok || other[id] || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, p)
	}
	return out
}

// otherwiseChanged returns the events of d.returns and d.departures that tx
// changes in any way besides deleting their `return` rows alone or their
// `departure` rows alone: both kinds deleted, a trip of another type
// deleted, a trip of theirs inserted or updated, their own row inserted,
// updated or deleted.
func (d *Deriver) otherwiseChanged(tx *wal.Tx) map[uid]bool {
	kind := make(map[uid]string, len(d.returns)+len(d.departures))
	other := make(map[uid]bool)
	for _, half := range [...]struct {
		ids  []string
		kind string
	}{{d.returns, "return"}, {d.departures, "departure"}} {
		for _, p := range half.ids {
			if id, ok := parseUID(p); ok {
				if k, seen := kind[id]; seen && k != half.kind {
					other[id] = true
				}
				kind[id] = half.kind
			}
		}
	}
	mark := func(r wal.Row, col string) {
		if id, ok := parseUID(str(r, col)); ok {
			if _, watched := kind[id]; watched {
				other[id] = true
			}
		}
	}
	tx.Each(func(c *wal.Change) bool {
		switch c.Table {
		case tableEvents:
			mark(c.Old, "id")
			mark(c.New, "id")
		case tableSupplemental:
			if c.Op != wal.OpDelete {
				mark(c.Old, "parent_event_id")
				mark(c.New, "parent_event_id")
			} else if t := str(c.Old, "type"); t != "return" && t != "departure" {
				mark(c.Old, "parent_event_id")
			}
		}
		return true
	})
	return other
}

func (d *Deriver) conflict(a, b string) {
	var rooms [2]string
	n := 0
	ua, _ := parseUID(a)
	ub, _ := parseUID(b)
	calA, okA := d.st.eventCalendar(ua)
	calB, okB := d.st.eventCalendar(ub)
	if okA {
		rooms[n] = schema.CalendarRoom(calA.String())
		n++
	}
	if okB && (!okA || calB != calA) {
		rooms[n] = schema.CalendarRoom(calB.String())
		n++
	}
	// Which calendars the events are in is state, not the transaction's:
	// both places are kept whatever it says (see hole).
	defer d.holes(len(rooms) - n)
	if n == 0 {
		d.log.Warn("conflict:resolved for events of unknown calendars dropped", "event1_id", a, "event2_id", b)
		return
	}
	data := marshal(schema.Conflict{Event1ID: a, Event2ID: b, Reason: "same_location"})
	for _, room := range rooms[:n] {
		d.add(room, schema.ConflictResolved, data)
	}
}

// underivable stands in for what a change whose old row is missing would have
// derived (its table's replica identity is not FULL): one sync:reset
// {reason: "replica_identity"} to each calendar room it concerns, so clients
// refetch instead of silently missing it. Counted as no_old_row; the
// consumer's table check says which table to fix.
func (d *Deriver) underivable(table string, cals ...string) {
	d.m.skipped.WithLabelValues(skipNoOldRow).Inc()
	if !d.noOldRow[table] {
		d.noOldRow[strings.Clone(table)] = true // a spilled change's name is a substring of its record
		d.log.Warn("changes without their old row: rooms told to refetch; set REPLICA IDENTITY FULL (koordi-realtime setup)", "table", table)
	}
	data := marshal(schema.Reset{Reason: "replica_identity"})
	for i, cal := range cals {
		if cal == "" || slices.Contains(cals[:i], cal) {
			continue
		}
		d.add(schema.CalendarRoom(cal), schema.SyncReset, data)
	}
}
