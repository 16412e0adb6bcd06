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
	// Explicit marks an event written with koordi_realtime.emit rather than
	// derived from a row change. It is delivered as it is and never moves
	// sockets between rooms, whatever its name: SQL may say member:added,
	// but only a membership row makes a member.
	Explicit bool `json:"-"`
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
// one committed transaction, in order, with offsets CommitLSN-0000,
// CommitLSN-0001, … Transactions that derive no event are not handed over;
// the acknowledged position moves past them on its own.
type Transaction struct {
	CommitLSN  uint64
	CommitTime time.Time
	Events     []Envelope
}
