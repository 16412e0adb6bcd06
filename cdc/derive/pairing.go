package derive

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/koordi/koordi-realtime/cdc/wal"
)

// ---- conflict:resolved across two transactions (EVENTS.md) ----
//
// Koordi's POST /api/events/resolve-conflict (reason "same_location") runs
// two autocommitted Prisma deleteMany statements: event1's `return` rows,
// then event2's `departure` rows. Each is a transaction of its own, so the
// same-transaction rule (rules.go, conflicts) never sees both halves. The
// Deriver keeps the last "returns-only" transaction and pairs it with the
// next "departures-only" one.

const (
	// conflictPairWindow is how far apart, by commit time, the two halves
	// may be. Koordi issues the second statement right after the first
	// returns (milliseconds); ten seconds leaves room for a slow database
	// without letting unrelated trip clean-ups minutes apart pair.
	conflictPairWindow = 10 * time.Second
	// maxTripPlaces bounds the return rows whose places a record keeps, and
	// the departure rows compared against them (Koordi creates one of each
	// per event; more are duplicates).
	maxTripPlaces = 4
	// maxAddressBytes bounds a kept address; longer ones are compared by
	// coordinates only.
	maxAddressBytes = 512
	// coordTolerance is the largest difference, in degrees, between two
	// coordinates of the same place. Koordi writes the event's own
	// location_lat/lng (or its geocoded point) into both trips, so the same
	// place has the same decimal(10,8) values; the tolerance (about 10 cm)
	// only absorbs float rounding.
	coordTolerance = 1e-6
)

type tripHalf uint8

const (
	halfNone       tripHalf = iota
	halfReturns             // every change deletes a `return` row of one event
	halfDepartures          // every change deletes a `departure` row of one event
)

// place is where a trip starts or ends: its address, normalised (fields
// joined by one space, lower case), and its coordinates.
type place struct {
	addr     string
	lat, lng float64
	hasCoord bool
}

// samePlace reports whether two trip ends are the same place: equal
// addresses or equal coordinates.
func samePlace(a, b place) bool {
	if a.addr != "" && a.addr == b.addr {
		return true
	}
	return a.hasCoord && b.hasCoord &&
		math.Abs(a.lat-b.lat) <= coordTolerance && math.Abs(a.lng-b.lng) <= coordTolerance
}

// tripPlace reads one end of a supplemental row: prefix "origin" or
// "destination". The address is copied, so the record does not keep the
// decoded row alive.
func tripPlace(r wal.Row, prefix string) place {
	var p place
	if a := strings.Join(strings.Fields(str(r, prefix+"_address")), " "); len(a) <= maxAddressBytes {
		p.addr = strings.Clone(strings.ToLower(a))
	}
	lat, err1 := strconv.ParseFloat(str(r, prefix+"_lat"), 64)
	lng, err2 := strconv.ParseFloat(str(r, prefix+"_lng"), 64)
	p.hasCoord = err1 == nil && err2 == nil && !(lat == 0 && lng == 0) &&
		!math.IsNaN(lat) && !math.IsNaN(lng) && !math.IsInf(lat, 0) && !math.IsInf(lng, 0)
	if p.hasCoord {
		p.lat, p.lng = lat, lng
	}
	return p
}

// pendingReturn is the last returns-only transaction: its event (A), where
// its return trips leave from (A's location), and when it committed. It is
// a fixed-size value: nothing here grows with the stream.
type pendingReturn struct {
	valid  bool
	event  uid
	text   string // event as canonical uuid text
	places [maxTripPlaces]place
	n      int
	at     time.Time
	lsn    uint64
	// pairedLSN is the commit LSN of the departures-only transaction the
	// record paired with (0: none yet). That transaction, derived again
	// after a failed delivery, pairs again; any other ends the record.
	pairedLSN uint64
}

// resolutionHalf classifies tx: halfReturns (or halfDepartures) when every
// change of the transaction is a DELETE of a supplemental_events row of type
// `return` (or `departure`) of one and the same parent event, and nothing
// else — no other type (early_arrival goes with a regeneration), no other
// table, no emit, so in particular not the parent's own deletion. The
// places of the first maxTripPlaces rows are left in d.half: where returns
// leave from, where departures go to.
func (d *Deriver) resolutionHalf(tx *wal.Tx) (tripHalf, uid) {
	d.halfN = 0
	half, parent := halfNone, uid{}
	tx.Each(func(c *wal.Change) bool {
		if c.Op != wal.OpDelete || c.Table != tableSupplemental {
			half = halfNone
			return false
		}
		h, end := halfNone, ""
		switch str(c.Old, "type") {
		case "return":
			h, end = halfReturns, "origin"
		case "departure":
			h, end = halfDepartures, "destination"
		default:
			half = halfNone
			return false
		}
		p, ok := parseUID(str(c.Old, "parent_event_id"))
		if !ok || (half != halfNone && (h != half || p != parent)) {
			half = halfNone
			return false
		}
		half, parent = h, p
		if d.halfN < maxTripPlaces {
			d.half[d.halfN] = tripPlace(c.Old, end)
			d.halfN++
		}
		return true
	})
	if half == halfNone {
		return halfNone, uid{}
	}
	return half, parent
}

// touches reports whether tx changes event id's row or any of its
// supplemental rows (ids compared as PostgreSQL prints them, any case).
func touches(tx *wal.Tx, id string) bool {
	is := func(r wal.Row, col string) bool {
		v := r.Get(col)
		return v.Valid && len(v.Text) == len(id) && strings.EqualFold(v.Text, id)
	}
	found := false
	tx.Each(func(c *wal.Change) bool {
		switch c.Table {
		case tableEvents:
			found = is(c.Old, "id") || is(c.New, "id")
		case tableSupplemental:
			found = is(c.Old, "parent_event_id") || is(c.New, "parent_event_id")
		}
		return !found
	})
	return found
}

// pairAcrossTransactions runs after the transaction's own rules:
//
//   - a transaction that touches the recorded event A in any other way (its
//     row updated or deleted, its trips inserted or deleted: Koordi
//     regenerating, unassigning or skipping it) ends the record;
//   - a returns-only transaction becomes the record (replacing any older);
//   - the first departures-only transaction of an event B ≠ A after the
//     record decides it: when it committed within conflictPairWindow of the
//     record and one of its departures goes to where one of A's returns
//     leaves from, it derives conflict:resolved {A, B, "same_location"}
//     (to A's calendar room, then B's when different); either way the
//     record is spent.
func (d *Deriver) pairAcrossTransactions(tx *wal.Tx) {
	half, parent := d.resolutionHalf(tx)
	p := &d.pending
	if p.valid && touches(tx, p.text) {
		p.valid = false
	}
	switch half {
	case halfReturns:
		*p = pendingReturn{valid: true, event: parent, text: parent.String(), n: d.halfN, at: tx.CommitTime, lsn: tx.CommitLSN}
		copy(p.places[:], d.half[:d.halfN])
	case halfDepartures:
		if !p.valid || tx.CommitLSN <= p.lsn {
			return
		}
		if p.pairedLSN != 0 && p.pairedLSN != tx.CommitLSN {
			p.valid = false
			return
		}
		if gap := tx.CommitTime.Sub(p.at); gap > conflictPairWindow || gap < -conflictPairWindow || !d.sameTripPlace(p) {
			p.valid = false
			return
		}
		p.pairedLSN = tx.CommitLSN
		d.conflict(p.text, parent.String())
	}
}

// sameTripPlace reports whether one of the transaction's departures (in
// d.half) goes to where one of the record's returns leaves from.
func (d *Deriver) sameTripPlace(p *pendingReturn) bool {
	for _, dep := range d.half[:d.halfN] {
		for _, ret := range p.places[:p.n] {
			if samePlace(ret, dep) {
				return true
			}
		}
	}
	return false
}
