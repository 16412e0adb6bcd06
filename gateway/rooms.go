package gateway

import (
	"errors"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// conn is what the gateway needs of a socket; *socketio.Socket implements it,
// and tests and benchmarks use in-memory ones.
type conn interface {
	// OfferFrames queues the frames refs name in sets (event frames, each
	// shared by every socket it goes to) in order, as far as there is
	// room, and reports how many: never closing the socket, for a socket
	// without room catches up from the window instead.
	OfferFrames(sets []*engineio.Frames, refs []engineio.FrameRef) int
	// Send queues a control frame (sync:reset, a refusal); a full queue
	// closes the socket.
	Send(f socketio.Frame) bool
	Queued() int
	QueueCap() int
	Drained() <-chan struct{}
	Done() <-chan struct{}
	Transport() string
	// Disconnect ends the socket with a server DISCONNECT, which stops the
	// client from reconnecting.
	Disconnect()
}

// client is the gateway's state of one socket.
type client struct {
	conn   conn
	userID string

	// Set by Connect, read by Connected and Disconnected (the protocol
	// layer orders them), never changed after.
	start     schema.Offset // where its events begin: after this offset
	notify    bool          // send sync:reset after connecting
	recovered bool          // the CONNECT reply promised recovery from start
	sameProc  bool          // the session began in this process
	expiry    *time.Timer

	// Used only on the socket's read path (Event): its user's rate budget,
	// index.budgets[userID] (see ratelimit.go), looked up at the first event.
	budget *rate.Limiter

	// Guarded by index.mu; sent is written by the publishing path under
	// pubMu with the read lock only while the socket is live.
	rooms   roomSet       // its rooms: as of the newest publication while live, as of sent while catching up
	sent    schema.Offset // the newest event offset queued to it: its cursor
	lagging bool          // catching up from the window: out of the index's rooms, its moves applied by the catch-up
	live    bool          // registered
	gone    bool          // the socket ended; never register again
	seq     uint64        // registration order, to find a user's oldest socket

	// clientMoves are the join:calendar and leave:calendar of a socket
	// catching up, each after the window entry that was newest when the
	// client asked: its rooms are those of its cursor, so applied to them
	// at once a join would make the catch-up send the calendar's events
	// from before the client asked (and before its user was a member), and
	// a leave would drop events the socket was owed. The catch-up applies
	// each where it belongs among the window's moves and events
	// (Gateway.sendChunk), as a live socket got it. Under mu; oldest first.
	clientMoves []clientMove

	// Its frames in the publisher's pending batch (index+1 into
	// pending.entries, 0: none) and how many; under pubMu.
	pendFirst, pendLast, pendN int32
}

// clientMove is a join:calendar (join) or leave:calendar of a socket
// catching up, after the window's entries up to seq after (entry.seq).
type clientMove struct {
	room  string
	join  bool
	after uint64
}

// maxClientMoves bounds the moves a socket catching up keeps; beyond it the
// client is refused (errTooManyMoves) until its catch-up ends. A client
// toggling one room between two events keeps one.
const maxClientMoves = 64

var (
	// errTooManyMoves refuses a client's move past maxClientMoves.
	errTooManyMoves = errors.New("too many calendar joins and leaves while this socket catches up: retry in a moment")
	// errNotMember refuses a join:calendar of a calendar its user is not an
	// accepted member of.
	errNotMember = errors.New("not an accepted member of this calendar")
)

// roomSet is the few rooms one socket is in: a user room and its
// calendars. A slice costs a held connection less than a map.
type roomSet []string

func (s roomSet) has(r string) bool { return slices.Contains(s, r) }

// add reports whether r was new.
func (s *roomSet) add(r string) bool {
	if s.has(r) {
		return false
	}
	*s = append(*s, r)
	return true
}

// remove reports whether r was there.
func (s *roomSet) remove(r string) bool {
	i := slices.Index(*s, r)
	if i < 0 {
		return false
	}
	last := len(*s) - 1
	(*s)[i] = (*s)[last]
	(*s)[last] = ""
	*s = (*s)[:last]
	return true
}

// room is one room's live members, in a slice for fast iteration. Removal
// finds a member by scanning while the room is small (every user has a room
// of its own, usually of one socket) and through pos, made when the room
// outgrows roomScanMax, after that.
type room struct {
	members []*client
	pos     map[*client]int // index in members; nil while small
	pendSet int32           // index+1 of its frames in Gateway.pend.sets; 0: none since the last flush
}

const roomScanMax = 8

func (rm *room) index(c *client) (int, bool) {
	if rm.pos != nil {
		i, ok := rm.pos[c]
		return i, ok
	}
	i := slices.Index(rm.members, c)
	return i, i >= 0
}

// index maps rooms to their live member sockets, users to their sockets, and
// holds the membership view. Concurrency: every field is guarded by mu;
// Publish holds the read lock while sending.
type index struct {
	mu    sync.RWMutex
	rooms map[string]*room
	users map[string][]*client // a user has few sockets: a slice costs less than a set
	// budgets holds the rate budget of each user with sockets here that has
	// sent an event; deleted with the user's last socket.
	budgets map[string]*rate.Limiter
	view    view
	sockets int
	lagging int // sockets catching up
	seq     uint64
}

func newIndex() *index {
	return &index{rooms: make(map[string]*room), users: make(map[string][]*client),
		budgets: make(map[string]*rate.Limiter), view: newView()}
}

// register makes c a socket of its user, live in rooms, its cursor at sent.
// Caller holds mu.
func (x *index) register(c *client) {
	x.seq++
	c.seq = x.seq
	c.live = true
	x.users[c.userID] = append(x.users[c.userID], c)
	x.sockets++
	if !c.lagging {
		for _, r := range c.rooms {
			x.joinRoom(c, r)
		}
	} else {
		x.lagging++
	}
}

// unregister removes c from every room and its user. Caller holds mu.
func (x *index) unregister(c *client) {
	if c.gone {
		return
	}
	c.gone = true
	if !c.live {
		return
	}
	if c.lagging {
		x.lagging--
	} else {
		for _, r := range c.rooms {
			x.leaveRoom(c, r)
		}
	}
	if u := x.users[c.userID]; len(u) > 0 {
		if i := slices.Index(u, c); i >= 0 {
			u[i] = u[len(u)-1]
			u[len(u)-1] = nil
			u = u[:len(u)-1]
		}
		if len(u) == 0 {
			delete(x.users, c.userID)
			delete(x.budgets, c.userID)
		} else {
			x.users[c.userID] = u
		}
	}
	x.sockets--
}

// suspend marks a live socket that fan-out found without room as lagging
// and takes it out of its rooms, and reports whether it did (not for a
// socket that is gone or catching up already). Caller holds mu.
func (x *index) suspend(c *client) bool {
	if c.gone || !c.live || c.lagging {
		return false
	}
	c.lagging = true
	for _, r := range c.rooms {
		x.leaveRoom(c, r)
	}
	x.lagging++
	return true
}

// setLive puts a socket that caught up back into its rooms. Its client's
// moves are in them already (the last chunk reached the window's end, or
// fellBehind applied them). Caller holds mu.
func (x *index) setLive(c *client) {
	if c.gone || !c.lagging {
		return
	}
	c.lagging = false
	x.lagging--
	c.clientMoves = nil
	for _, r := range c.rooms {
		x.joinRoom(c, r)
	}
}

// join adds c to room r: in the index too unless it is catching up (its
// catch-up puts it in its rooms when it is done). Caller holds mu.
func (x *index) join(c *client, r string) {
	if c.gone {
		return
	}
	if c.rooms.add(r) && !c.lagging {
		x.joinRoom(c, r)
	}
}

// leave removes c from room r. Caller holds mu.
func (x *index) leave(c *client, r string) {
	if c.gone {
		return
	}
	if c.rooms.remove(r) && !c.lagging {
		x.leaveRoom(c, r)
	}
}

// deferMove keeps a client's join:calendar (join) or leave:calendar of
// room r for a socket catching up, to be applied after the window entry
// numbered after (window.lastSeq). It fails with errTooManyMoves when the
// socket holds maxClientMoves already. Caller holds mu.
func (x *index) deferMove(c *client, r string, join bool, after uint64) error {
	if n := len(c.clientMoves); n > 0 {
		// The same room again with no entry between: the newer move
		// replaces the older, with the same effect.
		if last := &c.clientMoves[n-1]; last.room == r && last.after == after {
			last.join = join
			return nil
		}
	}
	if len(c.clientMoves) >= maxClientMoves {
		return errTooManyMoves
	}
	c.clientMoves = append(c.clientMoves, clientMove{room: r, join: join, after: after})
	return nil
}

func (x *index) joinRoom(c *client, r string) {
	rm := x.rooms[r]
	if rm == nil {
		rm = &room{}
		x.rooms[r] = rm
	}
	if _, ok := rm.index(c); ok {
		return
	}
	rm.members = append(rm.members, c)
	switch {
	case rm.pos != nil:
		rm.pos[c] = len(rm.members) - 1
	case len(rm.members) > roomScanMax:
		rm.pos = make(map[*client]int, len(rm.members))
		for i, m := range rm.members {
			rm.pos[m] = i
		}
	}
}

func (x *index) leaveRoom(c *client, r string) {
	rm := x.rooms[r]
	if rm == nil {
		return
	}
	i, ok := rm.index(c)
	if !ok {
		return
	}
	last := len(rm.members) - 1
	if i != last {
		moved := rm.members[last]
		rm.members[i] = moved
		if rm.pos != nil {
			rm.pos[moved] = i
		}
	}
	rm.members[last] = nil
	rm.members = rm.members[:last]
	if rm.pos != nil {
		delete(rm.pos, c)
	}
	if len(rm.members) == 0 {
		delete(x.rooms, r)
	}
}

// forUser calls fn for every socket of userID. Caller holds mu.
func (x *index) forUser(userID string, fn func(*client)) {
	for _, c := range x.users[userID] {
		fn(c)
	}
}

// oldest returns the socket of userID registered first.
func (x *index) oldest(userID string) *client {
	var o *client
	for _, c := range x.users[userID] {
		if o == nil || c.seq < o.seq {
			o = c
		}
	}
	return o
}

// applyMove follows a move in the view (unless its transaction's changes
// are in the loaded snapshot: seen) and for every socket not catching up,
// whose catch-up applies it from the window instead. It returns the members
// of a closed calendar. Caller holds mu.
func (x *index) applyMove(m *schema.Move, seen bool) (members []string) {
	if !seen {
		members = x.view.apply(m)
	} else if m.Op == schema.MoveClose {
		// Still recorded for replays: who was in the room before it closed.
		_, cal, _ := schema.ParseRoom(m.Room)
		if c, ok := schema.ParseUUID(cal); ok {
			for _, u := range x.view.byCal[c] {
				members = append(members, u.String())
			}
		}
	}
	switch m.Op {
	case schema.MoveJoin:
		x.forUser(m.User, func(c *client) {
			if !c.lagging {
				x.join(c, m.Room)
			}
		})
	case schema.MoveLeave:
		x.forUser(m.User, func(c *client) {
			if !c.lagging {
				x.leave(c, m.Room)
			}
		})
	case schema.MoveClose:
		if rm := x.rooms[m.Room]; rm != nil {
			for _, c := range slices.Clone(rm.members) {
				// A socket catching up is out of its rooms already (see
				// Gateway.suspend); its catch-up applies the close from
				// the window.
				if !c.lagging {
					x.leave(c, m.Room)
				}
			}
		}
	}
	return members
}
