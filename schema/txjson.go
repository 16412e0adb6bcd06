package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrBadTransaction is returned by [Transaction.UnmarshalJSON] for input that
// is not a transaction this service encoded: bytes from another process are
// checked as strictly as user input.
var ErrBadTransaction = errors.New("malformed transaction")

// MaxEventName bounds an event name, derived or emitted.
const MaxEventName = 128

// txWire is the JSON form of a Transaction. Field names are part of the wire
// format between nodes: add fields, never rename or repurpose one.
type txWire struct {
	CommitLSN  string     `json:"commit_lsn"`
	CommitTime time.Time  `json:"commit_time"`
	Xid        uint32     `json:"xid,omitempty"`
	Events     []Envelope `json:"events"`
	Moves      []moveWire `json:"moves,omitempty"`
}

type moveWire struct {
	At   int    `json:"at"`
	Op   string `json:"op"`
	User string `json:"user,omitempty"`
	Room string `json:"room"`
}

// MarshalJSON encodes tx as
//
//	{"commit_lsn":"<16 hex>","commit_time":"<RFC 3339>","xid":n,
//	 "events":[{"offset","room","event","data"},…],
//	 "moves":[{"at":i,"op":"join|leave|close","user":"<uuid>","room":"calendar:<uuid>"},…]}
//
// with "xid" and "moves" left out when zero or empty. Payloads are
// re-encoded as encoding/json does (compacted, HTML characters escaped).
func (tx Transaction) MarshalJSON() ([]byte, error) {
	w := txWire{
		CommitLSN:  fmt.Sprintf("%016X", tx.CommitLSN),
		CommitTime: tx.CommitTime.UTC(),
		Xid:        tx.Xid,
		Events:     tx.Events,
	}
	if w.Events == nil {
		w.Events = []Envelope{}
	}
	for _, m := range tx.Moves {
		w.Moves = append(w.Moves, moveWire{At: m.At, Op: m.Op.String(), User: m.User, Room: m.Room})
	}
	return json.Marshal(w)
}

// DecodeTransaction decodes the JSON form of a transaction. Every error,
// also a JSON syntax error, wraps [ErrBadTransaction].
func DecodeTransaction(b []byte) (Transaction, error) {
	var tx Transaction
	if err := json.Unmarshal(b, &tx); err != nil {
		if errors.Is(err, ErrBadTransaction) {
			return Transaction{}, err
		}
		return Transaction{}, fmt.Errorf("%w: %v", ErrBadTransaction, err)
	}
	return tx, nil
}

// UnmarshalJSON decodes the form MarshalJSON writes and checks what the
// gateway relies on: every event's offset is in this transaction and after
// the previous one, rooms are user or calendar rooms of uuids, event names
// are short UTF-8 text that socket.io-client does not reserve, payloads are JSON, and moves are in order, within
// the events, and name a user (join, leave) and a calendar room. Anything
// else is [ErrBadTransaction]; unknown fields are ignored. Use
// [DecodeTransaction], which also wraps JSON syntax errors.
func (tx *Transaction) UnmarshalJSON(b []byte) error {
	var w txWire
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: %v", ErrBadTransaction, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadTransaction, fmt.Sprintf(format, args...))
	}
	if len(w.CommitLSN) != 16 || !isHex(w.CommitLSN) {
		return bad("commit_lsn %q is not 16 hex digits", truncate(w.CommitLSN))
	}
	lsn, err := strconv.ParseUint(w.CommitLSN, 16, 64)
	if err != nil {
		return bad("commit_lsn: %v", err)
	}
	out := Transaction{CommitLSN: lsn, CommitTime: w.CommitTime.UTC(), Xid: w.Xid, Events: w.Events}
	for i := range out.Events {
		ev := &out.Events[i]
		if ev.Offset.LSN != lsn {
			return bad("event %d: offset %s is not in transaction %s", i, ev.Offset, w.CommitLSN)
		}
		if i > 0 && ev.Offset.Compare(out.Events[i-1].Offset) <= 0 {
			return bad("event %d: offset %s does not follow %s", i, ev.Offset, out.Events[i-1].Offset)
		}
		if _, _, err := ParseRoom(ev.Room); err != nil {
			return bad("event %d: room %q", i, truncate(ev.Room))
		}
		if ev.Event == "" || len(ev.Event) > MaxEventName || !utf8.ValidString(ev.Event) || IsReservedEventName(ev.Event) {
			return bad("event %d: name %q", i, truncate(ev.Event))
		}
		if len(ev.Data) == 0 {
			ev.Data = json.RawMessage("null")
		}
	}
	for i, mw := range w.Moves {
		m := Move{At: mw.At, User: mw.User, Room: mw.Room}
		switch mw.Op {
		case "join":
			m.Op = MoveJoin
		case "leave":
			m.Op = MoveLeave
		case "close":
			m.Op = MoveClose
		default:
			return bad("move %d: op %q", i, truncate(mw.Op))
		}
		if m.At < 0 || m.At > len(out.Events) || i > 0 && m.At < w.Moves[i-1].At {
			return bad("move %d: at %d is out of order or outside the %d events", i, m.At, len(out.Events))
		}
		if kind, _, err := ParseRoom(m.Room); err != nil || kind != RoomCalendar {
			return bad("move %d: room %q is not a calendar room", i, truncate(m.Room))
		}
		if (m.Op == MoveClose) != (m.User == "") || m.User != "" && !IsUUID(m.User) {
			return bad("move %d: user %q for %s", i, truncate(m.User), m.Op)
		}
		out.Moves = append(out.Moves, m)
	}
	*tx = out
	return nil
}
