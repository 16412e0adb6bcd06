package main

// The property test of issue 4 (TestServeRandomOperations): random, seeded
// operations on a model of the database, and the checks of what every
// socket received against an oracle.

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

var seedFlag = flag.Int64("e2e.seed", 0, "seed of TestServeRandomOperations (0: from the clock)")

// TestServeRandomOperations is the property test of issue 4: a random,
// seeded sequence of ~200 operations (memberships added, accepted, declined
// and deleted, events created, assigned, edited, moved and deleted,
// calendars created and deleted, explicit events, removals in the same
// transaction as an event of the calendar) across 6 users and about 4
// calendars, committed back to back while 8 sockets (websocket, polling,
// polling with upgrade) stay connected. Afterwards each socket must have
// received exactly the events of the calendars its user was an accepted
// member of at each event's commit, and its user room's events, with the
// same offsets and payloads, in commit order: no leak, no loss.
//
// The oracle is `koordi-realtime tail` on the same database with its own
// slot (every derived event with its room and offset), combined with the
// membership timeline, which the stream itself carries (member:added,
// member:removed, calendar:deleted), starting from the seeded memberships;
// the timeline is cross-checked against the operations that were run.
// Reproduce a failure with -e2e.seed=<printed seed>.
func TestServeRandomOperations(t *testing.T) {
	if seed := *seedFlag; seed != 0 {
		randomOperations(t, seed)
		return
	}
	base := time.Now().UnixNano()
	for i := int64(0); i < 3; i++ {
		seed := base + i
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { randomOperations(t, seed) })
	}
}

func randomOperations(t *testing.T, seed int64) {
	t.Logf("seed %d (rerun with -run TestServeRandomOperations -e2e.seed=%d)", seed, seed)
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	m := newModel(t, db, seed)
	db.setup()
	srv := startServer(t, db)
	oracle := startOracle(t, db)
	c := startClients(t, srv.url())
	socketsOf, sockets := m.connect(c, nil)

	m.run(200)
	t.Logf("operations: %v", m.counts)
	db.emitFence(1, m.users...)
	c.waitFence(1, sockets...)
	waitUntil(t, "tail printing the fence", func() bool { return strings.Count(oracle.stdout.String(), `"`+fence+`"`) == len(m.users) })

	want := m.replay(parseLines(t, oracle.stdout.String()))
	delivered := checkDelivered(c, socketsOf, want)
	t.Logf("%d events derived, %d delivered to %d sockets", strings.Count(oracle.stdout.String(), "\n"), delivered, len(sockets))
}

// startOracle runs tail in-process on db with its own slot: every event
// serve derives, with its room and offset, independently of any socket.
func startOracle(t *testing.T, db *testDB) *inProcess {
	t.Helper()
	slot := db.slot("oracle")
	t.Cleanup(func() { db.dropSlot(slot) })
	p := startInProcess(t, map[string]string{"DATABASE_URL": db.url, "TAIL_SLOT_NAME": slot}, "tail")
	t.Cleanup(func() {
		if code := p.stop(); code != 0 {
			t.Errorf("tail exit %d: %s", code, p.stderr.String())
		}
	})
	waitLogged(t, &p.stderr, "streaming started")
	return p
}

// model is what the property test believes the database holds, updated as
// each operation commits. Every random draw goes through r in a fixed
// order, so a seed replays the same operations.
type model struct {
	t       *testing.T
	db      *testDB
	r       *rand.Rand
	users   []string
	cals    []string                   // live calendars
	owner   map[string]string          // calendar → owner
	rows    map[[2]string]string       // (calendar, user) → membership status
	events  map[string]string          // event → calendar
	initial map[string]map[string]bool // calendar → accepted users when serve starts
	added   int                        // member:added the operations must produce
	removed int                        // member:removed (calendar copies) they must produce
	emitted map[string]int             // user → explicit events sent to the user room
	counts  map[string]int             // operations run, by kind, for the log
	seq     int
}

// newModel seeds db with 6 users and 4 calendars, each with its owner and
// some of the others as members.
func newModel(t *testing.T, db *testDB, seed int64) *model {
	t.Helper()
	m := &model{t: t, db: db, r: rand.New(rand.NewSource(seed)), owner: map[string]string{}, rows: map[[2]string]string{},
		events: map[string]string{}, initial: map[string]map[string]bool{}, emitted: map[string]int{}, counts: map[string]int{}}
	for i := 0; i < 6; i++ {
		u := fmt.Sprintf("a2000000-0000-4000-8000-%012d", i)
		m.users = append(m.users, u)
		db.exec(`INSERT INTO users (id, email, name) VALUES ($1, $2, $3)`, u, fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("User %d", i))
	}
	db.exec(`INSERT INTO children (id, name) VALUES ($1, 'Kid')`, kidID)
	for i := 0; i < 4; i++ {
		cal := m.newCalendar()
		for _, u := range m.users {
			if !m.member(cal, u) && m.r.Intn(10) < 4 {
				db.exec(acceptedSQL(cal, u, m.owner[cal]))
				m.rows[[2]string{cal, u}] = "accepted"
			}
		}
	}
	for k, st := range m.rows {
		if st == "accepted" {
			if m.initial[k[0]] == nil {
				m.initial[k[0]] = map[string]bool{}
			}
			m.initial[k[0]][k[1]] = true
		}
	}
	return m
}

func (m *model) member(cal, user string) bool { return m.rows[[2]string{cal, user}] == "accepted" }

func (m *model) id(prefix string) string {
	m.seq++
	return fmt.Sprintf("%s-0000-4000-8000-%012d", prefix, m.seq)
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

// pickEvent draws a live event, in a stable order so the seed decides.
func (m *model) pickEvent() (string, bool) {
	if len(m.events) == 0 {
		return "", false
	}
	ids := make([]string, 0, len(m.events))
	for id := range m.events {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return pick(m.r, ids), true
}

// assignee draws a user, or nobody ("") one time in four.
func (m *model) assignee() string {
	if m.r.Intn(4) == 0 {
		return ""
	}
	return pick(m.r, m.users)
}

// connect opens the sockets: one per user and a second one for two of
// them, over websocket, polling and polling with upgrade in turn. urlFor,
// if set, says where a socket of the given transports connects (several
// nodes: polling pinned to a node); nil: the clients' server.
func (m *model) connect(c *testClients, urlFor func(i int, transports []string) string) (socketsOf map[string][]string, all []string) {
	m.t.Helper()
	socketsOf = map[string][]string{}
	transports := [][]string{{"websocket"}, {"polling"}, nil}
	for i, u := range append(append([]string{}, m.users...), m.users[0], m.users[1]) {
		id := fmt.Sprintf("s%d-u%s", i, u[len(u)-1:])
		if tr := transports[i%len(transports)]; urlFor != nil {
			c.connectTo(id, urlFor(i, tr), token(m.t, u, time.Hour), tr...)
		} else {
			c.connect(id, token(m.t, u, time.Hour), tr...)
		}
		socketsOf[u] = append(socketsOf[u], id)
		all = append(all, id)
	}
	return socketsOf, all
}

// run commits n operations back to back, drawn with these weights out of
// 100; a draw that does not apply (adding a member twice) is drawn again.
func (m *model) run(n int) {
	for done := 0; done < n; {
		op := m.r.Intn(100)
		var ok bool
		switch {
		case op < 25:
			ok = m.addMember()
		case op < 45:
			ok = m.removeMember()
		case op < 60:
			ok = m.createEvent()
		case op < 75:
			ok = m.onEvent(m.assign)
		case op < 85:
			ok = m.onEvent(func(ev string) { m.edit(ev, done) })
		case op < 92:
			ok = m.onEvent(m.deleteEvent)
		case op < 95:
			ok = m.moveEvent()
		case op < 97:
			ok = m.emitNote(done)
		case op < 98:
			ok = m.deleteCalendar()
		default:
			ok = m.createCalendar()
		}
		if ok {
			done++
		}
	}
}

// addMember accepts a non-member the three ways a user becomes one: a
// declined membership accepted again, an accepted row, an invitation then
// its acceptance.
func (m *model) addMember() bool {
	cal, u := pick(m.r, m.cals), pick(m.r, m.users)
	k := [2]string{cal, u}
	if m.member(cal, u) {
		return false
	}
	switch {
	case m.rows[k] == "declined":
		m.db.exec(`UPDATE event_calendar_memberships SET status = 'accepted' WHERE event_calendar_id = $1 AND user_id = $2`, cal, u)
		m.counts["re-accept"]++
	case m.r.Intn(2) == 0:
		m.db.exec(acceptedSQL(cal, u, m.owner[cal]))
		m.counts["insert accepted"]++
	default:
		mid := m.id("d2000000")
		m.db.exec(`INSERT INTO event_calendar_memberships (id, event_calendar_id, invited_email, invitation_token, status, invited_by_user_id)
			VALUES ($1::uuid, $2, (SELECT email FROM users WHERE id = $3), $1::text, 'pending', $4)`, mid, cal, u, m.owner[cal])
		m.db.exec(`UPDATE event_calendar_memberships SET status = 'accepted', user_id = $2 WHERE id = $1`, mid, u)
		m.counts["invite and accept"]++
	}
	m.rows[k] = "accepted"
	m.added++
	return true
}

// removeMember declines or deletes a membership (never the owner's), one
// time in three in the same transaction as a new event of the calendar,
// which the removed member must not get.
func (m *model) removeMember() bool {
	cal, u := pick(m.r, m.cals), pick(m.r, m.users)
	k := [2]string{cal, u}
	if !m.member(cal, u) || m.owner[cal] == u {
		return false
	}
	where := ` WHERE event_calendar_id = '` + cal + `' AND user_id = '` + u + `'`
	del := `DELETE FROM event_calendar_memberships` + where
	if m.r.Intn(2) == 0 {
		del = `UPDATE event_calendar_memberships SET status = 'declined'` + where
		m.rows[k] = "declined"
	} else {
		delete(m.rows, k)
	}
	if m.r.Intn(3) == 0 {
		ev := m.id("e2000000")
		m.db.exec("BEGIN; " + del + "; " + insertEventSQL(ev, cal, "with removal", m.assignee()) + "; COMMIT")
		m.events[ev] = cal
		m.counts["remove with event"]++
	} else {
		m.db.exec(del)
		m.counts["remove"]++
	}
	m.removed++
	return true
}

func (m *model) createEvent() bool {
	ev, cal := m.id("e2000000"), pick(m.r, m.cals)
	m.db.exec(insertEventSQL(ev, cal, "created", m.assignee()))
	m.events[ev] = cal
	m.counts["create event"]++
	return true
}

// onEvent runs op on a live event, if there is one yet.
func (m *model) onEvent(op func(ev string)) bool {
	ev, ok := m.pickEvent()
	if ok {
		op(ev)
	}
	return ok
}

// assign (re)assigns an event, or unassigns it and flips is_skipped.
func (m *model) assign(ev string) {
	if a := m.assignee(); a == "" {
		m.db.exec(`UPDATE events SET assigned_to_user_id = NULL, is_skipped = NOT is_skipped WHERE id = $1`, ev)
	} else {
		m.db.exec(`UPDATE events SET assigned_to_user_id = $2 WHERE id = $1`, ev, a)
	}
	m.counts["assign"]++
}

func (m *model) edit(ev string, done int) {
	m.db.exec(`UPDATE events SET title = $2, version = version + 1 WHERE id = $1`, ev, fmt.Sprintf("edit %d", done))
	m.counts["edit"]++
}

func (m *model) deleteEvent(ev string) {
	m.db.exec(`DELETE FROM events WHERE id = $1`, ev)
	delete(m.events, ev)
	m.counts["delete event"]++
}

func (m *model) moveEvent() bool {
	ev, ok := m.pickEvent()
	to := pick(m.r, m.cals)
	if !ok || m.events[ev] == to {
		return false
	}
	m.db.exec(`UPDATE events SET event_calendar_id = $2 WHERE id = $1`, ev, to)
	m.events[ev] = to
	m.counts["move event"]++
	return true
}

// emitNote sends an explicit event to a user room.
func (m *model) emitNote(done int) bool {
	u := pick(m.r, m.users)
	m.db.exec(`SELECT koordi_realtime.emit('user:' || $1::text, 'e2e:note', jsonb_build_object('n', $2::int))`, u, done)
	m.emitted[u]++
	m.counts["emit"]++
	return true
}

// deleteCalendar deletes a calendar (while at least three are left), half
// the time followed at once by a stale explicit event to its room, which
// must reach nobody.
func (m *model) deleteCalendar() bool {
	if len(m.cals) < 3 {
		return false
	}
	i := m.r.Intn(len(m.cals))
	cal := m.cals[i]
	m.db.exec(`DELETE FROM event_calendars WHERE id = $1`, cal)
	if m.r.Intn(2) == 0 {
		m.db.exec(`SELECT koordi_realtime.emit('calendar:' || $1::text, 'e2e:stale', '{}')`, cal)
	}
	m.cals = append(m.cals[:i], m.cals[i+1:]...)
	for k := range m.rows {
		if k[0] == cal {
			delete(m.rows, k)
		}
	}
	for ev, c := range m.events {
		if c == cal {
			delete(m.events, ev)
		}
	}
	m.counts["delete calendar"]++
	return true
}

// createCalendar creates a calendar (while fewer than five exist); its
// owner's membership is a member:added.
func (m *model) createCalendar() bool {
	if len(m.cals) >= 5 {
		return false
	}
	m.newCalendar()
	m.added++
	m.counts["create calendar"]++
	return true
}

// newCalendar commits a calendar and its owner's membership together, as
// Koordi does.
func (m *model) newCalendar() string {
	cal, owner := m.id("c2000000"), pick(m.r, m.users)
	m.db.exec(`BEGIN; INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id)
		VALUES ('` + cal + `', 'Cal ` + cal[len(cal)-4:] + `', 'https://example.com/x.ics', '` + kidID + `', '` + owner + `'); ` +
		acceptedSQL(cal, owner, owner) + `; COMMIT`)
	m.cals = append(m.cals, cal)
	m.owner[cal] = owner
	m.rows[[2]string{cal, owner}] = "accepted"
	return cal
}

// replay turns the oracle's lines into what each user's sockets must
// receive: a user room's events, and a calendar room's events while the
// user is a member as the stream itself moves memberships (joins before
// member:added, leaves before member:removed, all leave after
// calendar:deleted). It fails the test where that timeline is not the one
// the operations made.
func (m *model) replay(lines []line) map[string][]line {
	t := m.t
	t.Helper()
	members := map[string]map[string]bool{} // calendar → accepted users
	for cal, us := range m.initial {
		members[cal] = map[string]bool{}
		for u := range us {
			members[cal][u] = true
		}
	}
	want := map[string][]line{}
	added, removed, emitted := 0, 0, map[string]int{}
	for _, l := range lines {
		kind, id, err := schema.ParseRoom(l.Room)
		if err != nil {
			t.Fatalf("tail printed room %q: %v", l.Room, err)
		}
		if kind == schema.RoomUser {
			if l.Event == "e2e:note" {
				emitted[id]++
			}
			want[id] = append(want[id], l)
			continue
		}
		if members[id] == nil {
			members[id] = map[string]bool{}
		}
		var who schema.Member
		switch l.Event {
		case schema.MemberAdded:
			if err := json.Unmarshal(l.Data, &who); err != nil {
				t.Fatal(err)
			}
			members[id][who.UserID] = true
			added++
		case schema.MemberRemoved:
			if err := json.Unmarshal(l.Data, &who); err != nil {
				t.Fatal(err)
			}
			delete(members[id], who.UserID) // only the user-room copy reaches them
			removed++
		}
		for u := range members[id] {
			want[u] = append(want[u], l)
		}
		if l.Event == schema.CalendarDeleted {
			delete(members, id)
		}
	}

	if added != m.added || removed != m.removed {
		t.Errorf("tail saw %d member:added and %d member:removed; the operations made %d and %d", added, removed, m.added, m.removed)
	}
	for k, st := range m.rows {
		if (st == "accepted") != members[k[0]][k[1]] {
			t.Errorf("membership %v: model %s, timeline %v", k, st, members[k[0]][k[1]])
		}
	}
	for cal, us := range members {
		for u := range us {
			if !m.member(cal, u) {
				t.Errorf("timeline has %s in %s; the model does not", u, cal)
			}
		}
	}
	for u, n := range m.emitted {
		if emitted[u] != n {
			t.Errorf("user %s: %d explicit events printed, %d emitted", u, emitted[u], n)
		}
	}
	return want
}

// checkDelivered compares what each socket received with its user's
// expected lines, exactly (offset, event, payload), up to the first
// discrepancy; it returns how many events were delivered in all.
func checkDelivered(c *testClients, socketsOf map[string][]string, want map[string][]line, restated ...func(socketEvent, line) bool) int {
	t := c.t
	t.Helper()
	delivered := 0
	for u, ids := range socketsOf {
		for _, id := range ids {
			got, exp := c.events(id), want[u]
			delivered += len(got)
			for i := 0; i < max(len(got), len(exp)); i++ {
				if i >= len(got) {
					t.Errorf("%s (user %s): lost %s %s %s and %d more", id, u, exp[i].Offset, exp[i].Event, exp[i].Data, len(exp)-i-1)
					break
				}
				if i >= len(exp) {
					t.Errorf("%s (user %s): leaked %s %s %s", id, u, got[i].Raw, got[i].Event, got[i].Data)
					break
				}
				if got[i].Raw != exp[i].Offset || got[i].Event != exp[i].Event ||
					!jsonEqual(got[i].Data, exp[i].Data) && !(len(restated) > 0 && restated[0](got[i], exp[i])) {
					t.Errorf("%s (user %s): event %d is %s %s %s, want %s %s %s", id, u, i,
						got[i].Raw, got[i].Event, got[i].Data, exp[i].Offset, exp[i].Event, exp[i].Data)
					break
				}
			}
		}
	}
	return delivered
}
