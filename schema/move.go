package schema

import "fmt"

// MoveOp is what a [Move] does to a room's members.
type MoveOp uint8

const (
	// MoveJoin: every socket of Move.User joins Move.Room (an accepted
	// membership).
	MoveJoin MoveOp = iota + 1
	// MoveLeave: every socket of Move.User leaves Move.Room (a membership
	// removed or no longer accepted).
	MoveLeave
	// MoveClose: every socket leaves Move.Room (the calendar was deleted).
	MoveClose
)

var moveOpNames = [...]string{MoveJoin: "join", MoveLeave: "leave", MoveClose: "close"}

func (op MoveOp) String() string {
	if op >= MoveJoin && op <= MoveClose {
		return moveOpNames[op]
	}
	return fmt.Sprintf("MoveOp(%d)", uint8(op))
}

// Move is a change of room membership that a transaction's events imply,
// applied by the gateway at its place in the transaction: before the event
// Events[At], or after every event when At == len(Events). So that
//
//   - member:added: the user's sockets join the calendar room just before
//     member:added itself, which they receive, as every later event of the
//     calendar;
//   - member:removed: they leave just before the calendar room's
//     member:removed, so nothing later reaches them (they get member:removed
//     through their own user room);
//   - calendar:deleted: the room closes just after the event.
//
// Moves are derived from membership and calendar rows only: an event emitted
// by SQL (koordi_realtime.emit) never moves a socket, whatever its name.
type Move struct {
	At   int
	Op   MoveOp
	User string // canonical uuid; empty for MoveClose
	Room string // always a calendar room
}
