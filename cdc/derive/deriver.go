package derive

import (
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// Watched table names, as wal.Change.Table carries them.
const (
	tableUsers        = "users"
	tableCalendars    = "event_calendars"
	tableMemberships  = "event_calendar_memberships"
	tableEvents       = "events"
	tableSupplemental = "supplemental_events"
)

// Config configures a Deriver. The zero value is ready to use.
type Config struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	// BulkEvents bounds the events one transaction derives for one room: a
	// room that would get more gets one sync:reset {reason: "bulk_change"}
	// in their place. Default 1,000; negative: no bound.
	BulkEvents int
}

// DefaultBulkEvents is Config.BulkEvents's default.
const DefaultBulkEvents = 1000

// Deriver turns committed transactions into Koordi socket events and keeps
// the [State] those events are derived against. Derive and Bootstrap must be
// called from one goroutine; State's read methods are safe from any.
type Deriver struct {
	log  *slog.Logger
	m    *metrics
	st   *State
	bulk int // Config.BulkEvents; 0: no bound

	unknownTables map[string]bool // logged once each
	noOldRow      map[string]bool // tables whose changes came without their old row, logged once each

	// pending is the last returns-only transaction, kept for
	// conflict:resolved across two transactions (pairing.go).
	pending pendingReturn

	// Per-transaction scratch, reused.
	out         []schema.Envelope
	moves       []schema.Move
	lsn         uint64
	next        uint32 // the next event's index in the transaction (see holes)
	deletedCals map[uid]bool
	deletedEvts map[uid]bool
	returns     []string // parent event ids of deleted `return` supplementals
	departures  []string // parent event ids of deleted `departure` supplementals
	userDeletes []uid
	calDeletes  []uid
	// cascadeLeaves are the accepted memberships of calendars the
	// transaction deletes, placed after their close at the end.
	cascadeLeaves []schema.Move
	half          [maxTripPlaces]place // places of a returns-/departures-only transaction
	halfN         int
	// perRoom tracks each room's envelopes in out, for the bulk bound: the
	// indices of the first bulk+1 of them, and how many were derived.
	perRoom map[string]*roomEvents
}

type roomEvents struct {
	name    string // shared by the room's envelopes: one string per room, not per event
	derived int
	indices []int
}

// New returns a Deriver with an empty state; call Bootstrap before the first
// Derive to learn the existing rows.
func New(cfg Config) *Deriver {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	bulk := cfg.BulkEvents
	switch {
	case bulk == 0:
		bulk = DefaultBulkEvents
	case bulk < 0:
		bulk = 0
	}
	return &Deriver{
		bulk:          bulk,
		perRoom:       make(map[string]*roomEvents),
		log:           log,
		m:             newMetrics(cfg.Registerer),
		st:            newState(),
		unknownTables: make(map[string]bool),
		noOldRow:      make(map[string]bool),
		deletedCals:   make(map[uid]bool),
		deletedEvts:   make(map[uid]bool),
	}
}

// State returns the live state; its read methods are safe for concurrent use.
func (d *Deriver) State() *State { return d.st }

// Derive turns one committed transaction into its events, with offsets
// tx.CommitLSN-00000000, -00000001, … in order (with a gap where the state
// decided against an event: see holes), and the room moves they imply
// (see [schema.Move]), and updates the state. It never fails: malformed emit
// messages and unknown tables are logged, counted and skipped. The returned
// transaction's slices are the caller's.
//
// A transaction is handled in three passes: (1) user and calendar inserts and
// updates are applied to the state, and the calendars and events the
// transaction deletes are noted, so every payload carries names as of the
// commit and cascaded deletes can be recognised whatever their WAL order;
// (2) the rules run change by change in WAL order; (3) the transaction's
// conflict:resolved events are added — those of its own returns and
// departures, then the one pairing it with the last returns-only
// transaction — and deleted users and calendars leave the state.
func (d *Deriver) Derive(tx *wal.Tx) schema.Transaction {
	d.begin(tx.CommitLSN)
	d.prepass(tx)
	tx.Each(func(c *wal.Change) bool {
		switch {
		case c.Op == wal.OpMessage:
			d.message(c)
		case c.Table == tableUsers:
			// Applied in the first pass, deletes in the third; no event (4.5).
		case c.Table == tableCalendars:
			d.calendarChange(tx, c)
		case c.Table == tableMemberships:
			d.membershipChange(c)
		case c.Table == tableEvents:
			d.eventChange(c)
		case c.Table == tableSupplemental:
			d.supplementalChange(c)
		default:
			d.unknownTable(c.Table)
		}
		return true
	})
	d.conflicts(tx)
	d.pairAcrossTransactions(tx)
	d.finish()
	d.placeCascadeLeaves()
	d.collapseBulk()
	for _, e := range d.out {
		d.m.countDerived(e.Event)
	}
	out := schema.Transaction{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Xid: tx.Xid, Events: d.out, Moves: d.moves}
	d.out, d.moves = nil, nil
	return out
}

// holes keeps n places in the transaction's numbering for events the state,
// not the transaction, decided against (an invitation to an email no user
// has yet, a conflict:resolved to a calendar the event index does not
// know). A restart decodes the replay window again against the state of
// then, which may decide otherwise; the places keep every other event's
// offset the same either way, so a recovering client neither misses one
// nor gets one twice.
func (d *Deriver) holes(n int) { d.next += uint32(n) }

// collapseBulk replaces the events of each room that got more than the bulk
// bound with one sync:reset {reason: "bulk_change"} at the place of its first
// one: a bulk change is a refetch, not a stream of toasts. Moves stay, at
// the same place among the events kept.
func (d *Deriver) collapseBulk() {
	if d.bulk <= 0 {
		return
	}
	var over map[string]bool
	for room, r := range d.perRoom {
		if r.derived > d.bulk {
			if over == nil {
				over = map[string]bool{}
			}
			over[room] = true
			d.log.Info("bulk change: room told to refetch instead of receiving every event", "room", room,
				"events", r.derived, "bulk_events", d.bulk, "commit_lsn", schema.Offset{LSN: d.lsn}.String())
		}
	}
	if over == nil {
		return
	}
	reset := marshal(schema.Reset{Reason: "bulk_change"})
	kept := d.out[:0]
	mi := 0
	for i := 0; i <= len(d.out); i++ {
		for ; mi < len(d.moves) && d.moves[mi].At <= i; mi++ {
			d.moves[mi].At = len(kept)
		}
		if i == len(d.out) {
			break
		}
		e := d.out[i]
		switch {
		case !over[e.Room]:
			kept = append(kept, e)
		case i == d.perRoom[e.Room].indices[0]:
			// The first event's offset: numbers are given as events are
			// derived, so the others' stay what they were.
			kept = append(kept, schema.Envelope{Room: e.Room, Event: schema.SyncReset, Data: reset, Offset: e.Offset})
		}
	}
	clear(d.out[len(kept):])
	d.out = kept
}

func (d *Deriver) begin(lsn uint64) {
	d.lsn, d.next = lsn, 0
	d.out, d.moves = nil, nil
	clear(d.perRoom)
	clear(d.deletedCals)
	clear(d.deletedEvts)
	// Cleared, not only cut: their strings are substrings of the last
	// transaction's rows, which the arrays would keep alive.
	clear(d.returns)
	clear(d.departures)
	clear(d.cascadeLeaves)
	d.returns, d.departures = d.returns[:0], d.departures[:0]
	d.userDeletes, d.calDeletes = d.userDeletes[:0], d.calDeletes[:0]
	d.cascadeLeaves = d.cascadeLeaves[:0]
}

// prepass applies name-carrying changes first ("names as of the change's
// commit", EVENTS.md) and notes deletions for cascade detection.
func (d *Deriver) prepass(tx *wal.Tx) {
	tx.Each(func(c *wal.Change) bool {
		switch c.Table {
		case tableUsers:
			switch c.Op {
			case wal.OpInsert, wal.OpUpdate:
				if id, ok := parseUID(str(c.New, "id")); ok {
					d.st.setUser(id, str(c.New, "name"), str(c.New, "email"))
					d.userDeletes = slices.DeleteFunc(d.userDeletes, func(u uid) bool { return u == id })
				}
			case wal.OpDelete:
				if id, ok := parseUID(str(c.Old, "id")); ok {
					d.userDeletes = append(d.userDeletes, id)
				}
			}
		case tableCalendars:
			switch c.Op {
			case wal.OpInsert, wal.OpUpdate:
				if id, ok := parseUID(str(c.New, "id")); ok {
					d.calDeletes = slices.DeleteFunc(d.calDeletes, func(u uid) bool { return u == id })
					if c.New.Has("name") {
						// Cloned: see State.setUser.
						d.st.calendar(id).name = strings.Clone(str(c.New, "name"))
					} else {
						d.st.calendar(id)
					}
				}
			case wal.OpDelete:
				if id, ok := parseUID(str(c.Old, "id")); ok {
					d.deletedCals[id] = true
					d.calDeletes = append(d.calDeletes, id)
				}
			}
		case tableEvents:
			if c.Op == wal.OpDelete {
				if id, ok := parseUID(str(c.Old, "id")); ok {
					d.deletedEvts[id] = true
				}
			}
		}
		return true
	})
}

// finish removes what the transaction deleted, after every payload that
// could name it has been built.
func (d *Deriver) finish() {
	for _, id := range d.userDeletes {
		d.st.deleteUser(id)
	}
	for _, id := range d.calDeletes {
		delete(d.st.calendars, id)
	}
}

// add appends one envelope and reports whether it did. data is the payload
// marshalled once; the same bytes may be shared by several envelopes
// (member:removed goes to two rooms).
func (d *Deriver) add(room, event string, data []byte) bool {
	if _, _, err := schema.ParseRoom(room); err != nil {
		// Only rows whose ids are not uuids get here; no socket could be in
		// such a room.
		d.m.skipped.WithLabelValues(skipInvalidID).Inc()
		d.log.Warn("event for a row with a non-uuid id dropped", "event", event, "room", room)
		return false
	}
	r := d.perRoom[room]
	if r == nil {
		r = &roomEvents{name: room}
		d.perRoom[room] = r
	}
	r.derived++
	// Numbered as derived, whether kept or collapsed (see holes and
	// collapseBulk), so that only its own room's events depend on how
	// many the room got.
	off := schema.Offset{LSN: d.lsn, Index: d.next}
	d.next++
	switch {
	case d.bulk > 0 && r.derived > d.bulk+1:
		// Past the bound: collapseBulk replaces the room's events, so
		// none of the rest is kept.
		return true
	case d.bulk > 0 && r.derived == d.bulk+1:
		// Just past it: free what the room's events held; only their
		// places stay until collapseBulk.
		for _, i := range r.indices[1:] {
			d.out[i].Data = nil
		}
		return true
	case d.bulk > 0:
		r.indices = append(r.indices, len(d.out))
	}
	d.out = append(d.out, schema.Envelope{Room: r.name, Event: event, Data: data, Offset: off})
	return true
}

// move records a room move at the current end of the events: it applies
// before the next event added, or after the last one.
func (d *Deriver) move(op schema.MoveOp, user, room string) {
	// Cloned: a move outlives the transaction in the gateway's replay
	// window, and user is a substring of its row (see State.setUser).
	d.moves = append(d.moves, schema.Move{At: len(d.out), Op: op, User: strings.Clone(user), Room: room})
}

// marshal encodes a payload struct of package schema, which cannot fail.
func marshal(payload any) []byte {
	b, err := json.Marshal(payload)
	if err != nil {
		panic("derive: marshal schema payload: " + err.Error())
	}
	return b
}

func (d *Deriver) unknownTable(table string) {
	d.m.skipped.WithLabelValues(skipUnknownTable).Inc()
	if !d.unknownTables[table] && len(d.unknownTables) < 1000 {
		d.unknownTables[strings.Clone(table)] = true // a spilled change's name is a substring of its record
		d.log.Warn("change of an unwatched table ignored", "table", table)
	}
}

func (d *Deriver) message(c *wal.Change) {
	room, event, data, reason := parseEmit(c.Message)
	if reason != "" {
		d.m.rejected.WithLabelValues(reason).Inc()
		d.log.Warn("emit message rejected", "reason", reason,
			"commit_lsn", schema.Offset{LSN: d.lsn}.String(), "bytes", len(c.Message))
		return
	}
	// Rooms hold PostgreSQL's lower-case uuids; SQL may have written upper
	// case. An emitted event never moves a socket, whatever its name: only
	// membership and calendar rows do (see memberEvent, calendarChange).
	d.add(strings.ToLower(room), event, data)
}
