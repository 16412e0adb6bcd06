package gateway

import (
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// conn is what the gateway needs of a socket; *socketio.Socket implements it,
// and tests and benchmarks use in-memory ones.
type conn interface {
	Send(f socketio.Frame) bool
	Transport() string
	CloseTransport()
	Disconnect()
}

// client is the gateway's state of one socket.
type client struct {
	conn   conn
	userID string

	// Set by Connect, read by Connected and Disconnected (the protocol
	// layer orders them), never changed after.
	start     schema.Offset // replay position
	calendars []string      // accepted calendars at connect
	notify    bool          // send sync:reset after connecting
	recovered bool          // the CONNECT reply promised recovery from start
	sameProc  bool          // the session began in this process
	expiry    *time.Timer

	// Used only on the socket's read path (Event).
	limiter    *rate.Limiter // made at the first event: most sockets send none
	abuseSince time.Time
	abuseCount int

	// Guarded by index.mu.
	rooms   roomSet  // rooms joined (live) or to join (pending)
	live    bool     // registered in rooms; false while connecting
	gone    bool     // the socket ended; never register again
	pending []roomOp // room changes that arrived while connecting
	leaves  uint64   // room removals so far; join:calendar rechecks if it moved
}

type roomOp struct {
	room string
	join bool
}

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

// room is one room's members, in a slice for fast iteration. Removal finds
// a member by scanning while the room is small (every user has a room of
// its own, usually of one socket) and through pos, made when the room
// outgrows roomScanMax, after that.
type room struct {
	members []*client
	pos     map[*client]int // index in members; nil while small
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

// index maps rooms to member sockets and users to their sockets.
// Concurrency: every field is guarded by mu; Publish holds the read lock
// while sending.
type index struct {
	mu    sync.RWMutex
	rooms map[string]*room
	users map[string][]*client // a user has few sockets: a slice costs less than a set
	// connecting holds the registered sockets that are not live yet.
	connecting map[*client]struct{}
	sockets    int
}

func newIndex() *index {
	return &index{
		rooms:      make(map[string]*room),
		users:      make(map[string][]*client),
		connecting: make(map[*client]struct{}),
	}
}

// register adds c to its user's sockets, before it is live, so room changes
// for the user reach it while it connects. Caller holds mu.
func (x *index) register(c *client) {
	x.users[c.userID] = append(x.users[c.userID], c)
	x.connecting[c] = struct{}{}
	x.sockets++
}

// unregister removes c from every room and its user. Caller holds mu.
func (x *index) unregister(c *client) {
	if c.gone {
		return
	}
	c.gone = true
	delete(x.connecting, c)
	if c.live {
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
		} else {
			x.users[c.userID] = u
		}
	}
	x.sockets--
}

// activate makes a connecting client live: it applies the room changes that
// arrived while it was connecting on top of initial and joins the result.
// It reports false if the socket is already gone. Caller holds mu.
func (x *index) activate(c *client, initial []string) bool {
	if c.gone {
		return false
	}
	for _, r := range initial {
		c.rooms.add(r)
	}
	for _, op := range c.pending {
		if op.join {
			c.rooms.add(op.room)
		} else {
			c.rooms.remove(op.room)
		}
	}
	c.pending = nil
	c.live = true
	delete(x.connecting, c)
	for _, r := range c.rooms {
		x.joinRoom(c, r)
	}
	return true
}

// join adds c to room r. Caller holds mu.
func (x *index) join(c *client, r string) {
	if c.gone {
		return
	}
	if !c.live {
		c.pending = append(c.pending, roomOp{r, true})
		return
	}
	if c.rooms.add(r) {
		x.joinRoom(c, r)
	}
}

// leave removes c from room r. Caller holds mu.
func (x *index) leave(c *client, r string) {
	if c.gone {
		return
	}
	c.leaves++
	if !c.live {
		c.pending = append(c.pending, roomOp{r, false})
		return
	}
	if c.rooms.remove(r) {
		x.leaveRoom(c, r)
	}
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

// forUser calls fn for every socket of userID, live or connecting. Caller
// holds mu.
func (x *index) forUser(userID string, fn func(*client)) {
	for _, c := range x.users[userID] {
		fn(c)
	}
}

// closeRoom removes every member of r and records the leave for connecting
// sockets. Caller holds mu.
func (x *index) closeRoom(r string) {
	if rm := x.rooms[r]; rm != nil {
		for _, c := range append([]*client(nil), rm.members...) {
			x.leave(c, r)
		}
	}
	for c := range x.connecting {
		x.leave(c, r)
	}
}
