package schema

import (
	"encoding/json"
	"time"
)

// Envelope is one event addressed to one room. Data is the JSON payload,
// encoded once by the producer; consumers pass the bytes on without
// re-encoding.
//
// Its JSON form is the line `koordi-realtime tail` prints:
// {"offset","room","event","data"}.
type Envelope struct {
	Offset Offset          `json:"offset"`
	Room   string          `json:"room"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
}

// NewEnvelope marshals payload into an envelope. Payloads are the structs of
// this package, which always marshal; the error is returned for emit payloads
// and other caller-built values.
func NewEnvelope(off Offset, room, event string, payload any) (Envelope, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{Offset: off, Room: room, Event: event, Data: data}, nil
}

// Transaction is the unit cdc hands to its consumer: the events derived from
// one committed transaction, in order, with offsets CommitLSN-00000000,
// CommitLSN-00000001, … (increasing; with gaps where an event's existence
// depended on state, or a bulk change collapsed a room's events, so that
// decoding the transaction again keeps every other offset), and the room
// moves those events imply, each in its
// place in that order (see [Move]). Transactions that derive no event are not
// handed over; the acknowledged position moves past them on its own.
//
// Its JSON form ([Transaction.MarshalJSON]) is how a transaction travels
// between processes; see the package documentation.
type Transaction struct {
	CommitLSN  uint64
	CommitTime time.Time
	// Xid is PostgreSQL's id of the transaction (32 bits, as logical
	// decoding reports it), so a reader of a database snapshot can tell
	// whether the snapshot already saw this transaction's changes.
	Xid    uint32
	Events []Envelope
	Moves  []Move
}
