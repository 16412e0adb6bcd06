package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

var testSecret = []byte("koordi-realtime test secret, 32+ bytes long")

// memConn is an in-memory socket: it records frames, of which at most limit
// wait (are not yet taken by drain) at a time.
type memConn struct {
	mu     sync.Mutex
	frames []socketio.Frame
	limit  int // queue bound; 0: unbounded
	taken  int // frames the "transport" took
	calls  int // OfferFrames calls
	// unowed counts the frames of the sets OfferFrames was given that the
	// call did not queue to this socket: what its queue would keep alive
	// beyond its own.
	unowed  int
	closed  bool
	done    chan struct{}
	drained chan struct{}
}

func (m *memConn) init() {
	if m.done == nil {
		m.done, m.drained = make(chan struct{}), make(chan struct{}, 1)
	}
}

func (m *memConn) offer(f socketio.Frame) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || (m.limit > 0 && len(m.frames)-m.taken >= m.limit) {
		return false
	}
	m.frames = append(m.frames, f)
	return true
}

func (m *memConn) OfferFrames(sets []*engineio.Frames, refs []engineio.FrameRef) int {
	per := map[uint32]int{}
	for _, r := range refs {
		per[r.Set]++
	}
	m.mu.Lock()
	m.calls++
	for set, n := range per {
		m.unowed += sets[set].Len() - n
	}
	m.mu.Unlock()
	for n, r := range refs {
		if !m.offer(sets[r.Set].At(int(r.Index)).Data) {
			return n
		}
	}
	return len(refs)
}

func (m *memConn) Send(f socketio.Frame) bool {
	if m.offer(f) {
		return true
	}
	m.close()
	return false
}

func (m *memConn) Queued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.frames) - m.taken
}

func (m *memConn) QueueCap() int {
	if m.limit > 0 {
		return m.limit
	}
	return 4096
}

func (m *memConn) Drained() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	return m.drained
}

func (m *memConn) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	return m.done
}

// drain takes every waiting frame, as a transport writing them would.
func (m *memConn) drain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	m.taken = len(m.frames)
	select {
	case m.drained <- struct{}{}:
	default:
	}
}

func (m *memConn) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
}

func (m *memConn) Transport() string { return "websocket" }
func (m *memConn) Disconnect()       { m.close() }

func (m *memConn) got() []socketio.Frame {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]socketio.Frame(nil), m.frames...)
}

// payloadsOf is the payloads c got, comma-separated.
func payloadsOf(c *memConn) string {
	var out []string
	for _, f := range c.got() {
		var args []json.RawMessage
		_ = json.Unmarshal(f[2:], &args) // "42[event, payload, offset]"
		out = append(out, string(args[1]))
	}
	return strings.Join(out, ",")
}

// members builds a membership snapshot from user → calendar ids.
func members(m map[string][]string) *schema.MembershipSnapshot {
	var snap schema.MembershipSnapshot
	for u, cals := range m {
		for _, c := range cals {
			snap.Accepted = append(snap.Accepted, schema.Membership{User: u, Calendar: c})
		}
	}
	return &snap
}

func newTestGateway(t testing.TB, cfg Config) *Gateway {
	t.Helper()
	if cfg.JWTSecret == nil {
		cfg.JWTSecret = testSecret
	}
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = testReplayWindow
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	return g
}

// attach registers an in-memory socket of user, live in rooms from the
// newest position, as Connected does for a socket with nothing to catch up.
func attach(g *Gateway, user string, c conn, rooms ...string) *client {
	cl := &client{conn: c, userID: user, rooms: append(roomSet(nil), rooms...)}
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	cl.sent = g.window.position()
	g.idx.register(cl)
	return cl
}

// testReplayWindow is serve's default, which most tests run with.
const testReplayWindow = 2 * time.Minute

func uuid(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", n) }

func off(lsn uint64, i uint32) schema.Offset { return schema.Offset{LSN: lsn, Index: i} }

func tx(lsn uint64, envs ...schema.Envelope) schema.Transaction {
	for i := range envs {
		envs[i].Offset = off(lsn, uint32(i))
	}
	return schema.Transaction{CommitLSN: lsn, Events: envs}
}

func env(room, event, data string) schema.Envelope {
	return schema.Envelope{Room: room, Event: event, Data: json.RawMessage(data)}
}

func TestWindowBounds(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fr := socketio.Frame("42[\"e\",{},\"x\"]")
	tests := []struct {
		name          string
		maxAge        time.Duration
		maxEvents     int
		maxBytes      int
		n             int
		evictAt       time.Time
		wantRetained  int
		wantFirstKept uint64
	}{
		{"all fit", time.Minute, 10, 1 << 20, 5, t0, 5, 1},
		{"count bound", time.Minute, 3, 1 << 20, 5, t0, 3, 3},
		{"bytes bound", time.Minute, 100, 2 * (len(fr) + 1 + entryOverhead), 5, t0, 2, 4},
		{"age bound", 2 * time.Second, 100, 1 << 20, 5, t0.Add(4 * time.Second), 4, 2},
		{"disabled", 0, 0, 0, 5, t0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(tt.maxAge, tt.maxEvents, tt.maxBytes)
			for i := 1; i <= tt.n; i++ {
				w.add(entry{off: off(uint64(i), 0), room: "r", frame: fr, at: t0.Add(time.Duration(i) * time.Second)})
			}
			w.evict(tt.evictAt)
			var kept []uint64
			w.walk(schema.Offset{}, func(e *entry) bool {
				if string(e.frame) != string(fr) {
					t.Fatalf("frame %q", e.frame)
				}
				kept = append(kept, e.off.LSN)
				return true
			})
			if len(kept) != tt.wantRetained {
				t.Fatalf("retained %v, want %d", kept, tt.wantRetained)
			}
			if len(kept) > 0 && kept[0] != tt.wantFirstKept {
				t.Fatalf("first retained %d, want %d", kept[0], tt.wantFirstKept)
			}
			if n, _ := w.stats(); n != tt.wantRetained {
				t.Fatalf("stats %d", n)
			}
			// Every position from the newest evicted one on is resumable in
			// this process; anything older is not.
			if tt.wantRetained < tt.n {
				floor := uint64(tt.n - tt.wantRetained)
				if !w.covers(off(floor, 0), true) || w.covers(off(floor-1, 0), true) {
					t.Fatalf("covers around floor %d wrong", floor)
				}
			}
		})
	}
}

func TestWindowCompacts(t *testing.T) {
	w := newWindow(time.Hour, 10, 1<<30)
	for i := 1; i <= 5000; i++ {
		w.add(entry{off: off(uint64(i), 0), room: "r", frame: socketio.Frame("x"), at: time.Now()})
	}
	if cap(w.buf) > 4096 {
		t.Fatalf("buffer grew to %d entries for a window of 10", cap(w.buf))
	}
	var got []uint64
	w.walk(off(4995, 0), func(e *entry) bool { got = append(got, e.off.LSN); return true })
	if fmt.Sprint(got) != "[4996 4997 4998 4999 5000]" {
		t.Fatalf("after 4995: %v", got)
	}
}

func TestWindowCovers(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(w *window)
		pos    schema.Offset
		same   bool
		covers bool
	}{
		{"fresh process, same session", func(w *window) {}, schema.Offset{}, true, true},
		{"fresh process, foreign session", func(w *window) {}, off(5, 0), false, false},
		{"foreign session before first event", func(w *window) { w.add(entry{off: off(10, 0)}) }, off(9, 0), false, false},
		{"foreign session at first event", func(w *window) { w.add(entry{off: off(10, 0)}) }, off(10, 0), false, true},
		{"foreign session after resume point", func(w *window) { w.resumeAfter(off(5, 0)); w.add(entry{off: off(10, 0)}) }, off(6, 0), false, true},
		{"foreign session before resume point", func(w *window) { w.resumeAfter(off(5, 0)) }, off(4, 0), false, false},
		{"foreign session beyond newest", func(w *window) { w.resumeAfter(off(5, 0)) }, off(50, 0), false, true},
		{"after reset", func(w *window) { w.add(entry{off: off(10, 0)}); w.reset() }, off(9, 0), true, false},
		{"at the last event before a reset", func(w *window) { w.add(entry{off: off(10, 0)}); w.reset() }, off(10, 0), true, false},
		{"at the reset point", func(w *window) { w.add(entry{off: off(10, 0)}); w.reset() }, off(10, 1), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(time.Hour, 100, 1<<20)
			tt.setup(w)
			if got := w.covers(tt.pos, tt.same); got != tt.covers {
				t.Fatalf("covers(%v, same=%v) = %v, want %v", tt.pos, tt.same, got, tt.covers)
			}
		})
	}
}

func TestPID(t *testing.T) {
	key := derivePIDKey(testSecret)
	p := pid{instance: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, start: off(0x169A3F8, 2), userID: uuid(7)}
	s := encodePID(key, p)
	got, err := decodePID(key, s)
	if err != nil || got != p {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if strings.ContainsAny(s, "+/=") {
		t.Fatalf("pid %q is not URL-safe", s)
	}
	flip := []byte(s)
	flip[10] ^= 1
	other := encodePID(derivePIDKey([]byte("another secret of at least 32 bytes!")), p)
	for _, bad := range []string{"", "x", string(flip), other, s[:len(s)-1], s + "A", strings.Repeat("A", len(s))} {
		if _, err := decodePID(key, bad); err == nil {
			t.Errorf("decodePID(%q) accepted", bad)
		}
	}
}

func TestIndexSwapRemove(t *testing.T) {
	for _, n := range []int{5, roomScanMax + 1, 3 * roomScanMax} {
		x := newIndex()
		var cs []*client
		for i := range n {
			c := &client{conn: &memConn{}, userID: uuid(i), rooms: roomSet{"r"}}
			x.register(c)
			cs = append(cs, c)
		}
		x.unregister(cs[1])
		x.forUser(uuid(3), func(c *client) { x.leave(c, "r") })
		x.leave(cs[3], "r") // twice: no effect
		rm := x.rooms["r"]
		if len(rm.members) != n-2 {
			t.Fatalf("%d members: %d left, want %d", n, len(rm.members), n-2)
		}
		if (rm.pos != nil) != (n > roomScanMax) {
			t.Errorf("%d members: position map %v", n, rm.pos != nil)
		}
		for i, c := range rm.members {
			if j, ok := rm.index(c); !ok || j != i {
				t.Fatalf("%d members: member %d found at %d, %v", n, i, j, ok)
			}
			if c == cs[1] || c == cs[3] {
				t.Fatalf("%d members: a removed member is still in", n)
			}
		}
		for _, c := range append([]*client(nil), rm.members...) {
			x.unregister(c)
		}
		if len(x.rooms) != 0 {
			t.Fatalf("%d members: room left after every member went", n)
		}
	}
}

func TestPublish(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := newTestGateway(t, Config{Registerer: reg})
	calA, calB := schema.CalendarRoom(uuid(0xA)), schema.CalendarRoom(uuid(0xB))
	alice, bob, carol := &memConn{}, &memConn{}, &memConn{limit: 1}
	attach(g, uuid(1), alice, schema.UserRoom(uuid(1)), calA)
	attach(g, uuid(2), bob, schema.UserRoom(uuid(2)), calA, calB)
	attach(g, uuid(3), carol, calA)

	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(g.Publish(ctx, tx(100, env(calA, schema.EventCreated, `{"n":1}`), env(calB, schema.EventCreated, `{"n":2}`))))
	must(g.Publish(ctx, tx(200, env(calA, schema.EventDeleted, `{"n":3}`))))
	must(g.Publish(ctx, tx(100, env(calA, schema.EventCreated, `{"n":1}`)))) // re-sent by the stream

	a, b := alice.got(), bob.got()
	wantA := []string{
		`42["event:created",{"n":1},"0000000000000064-00000000"]`,
		`42["event:deleted",{"n":3},"00000000000000C8-00000000"]`,
	}
	if len(a) != 2 || string(a[0]) != wantA[0] || string(a[1]) != wantA[1] {
		t.Fatalf("alice got %q, want %q", a, wantA)
	}
	if len(b) != 3 || string(b[1]) != `42["event:created",{"n":2},"0000000000000064-00000001"]` {
		t.Fatalf("bob got %q", b)
	}
	// One encoding per event, shared by every recipient.
	if &a[0][0] != &b[0][0] {
		t.Fatal("alice and bob got different copies of one event")
	}
	// Carol's queue of one was full: she is not cut, she catches up from
	// the window as her transport takes what waits.
	if c := carol.got(); len(c) != 1 {
		t.Fatalf("carol (queue of 1) got %d frames", len(c))
	}
	if got := testutil.ToFloat64(g.metrics.droppedClosed); got != 0 {
		t.Fatalf("frames dropped for closed sockets = %v", got)
	}
	g.idx.mu.RLock()
	lagging := g.idx.lagging
	g.idx.mu.RUnlock()
	if lagging != 1 {
		t.Fatalf("%d sockets catching up, want carol", lagging)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(carol.got()) < 2 && time.Now().Before(deadline) {
		carol.drain()
		time.Sleep(time.Millisecond)
	}
	if c := carol.got(); len(c) != 2 || string(c[1]) != wantA[1] {
		t.Fatalf("carol after catching up: %q", c)
	}
	if got := testutil.ToFloat64(g.metrics.droppedDup); got != 1 {
		t.Fatalf("duplicates dropped = %v", got)
	}
	// The catch-up counts its frames after it has queued them.
	waitUntil(t, "carol's replay counted", func() bool { return testutil.ToFloat64(g.metrics.messagesSent) >= 7 })
	if got := testutil.ToFloat64(g.metrics.messagesSent); got != 7 {
		t.Fatalf("messages sent = %v", got)
	}

	// A leave move stops delivery at once; a close empties the room.
	t300 := tx(300, env(calA, "x", `1`), env(calB, "y", `2`))
	t300.Moves = []schema.Move{{At: 0, Op: schema.MoveLeave, User: uuid(2), Room: calA}, {At: 0, Op: schema.MoveClose, Room: calB}}
	must(g.Publish(ctx, t300))
	if n := len(bob.got()); n != 3 {
		t.Fatalf("bob got %d frames after leaving", n)
	}
	t400 := tx(400, env(calB, "z", `3`))
	t400.Moves = []schema.Move{{At: 0, Op: schema.MoveJoin, User: uuid(2), Room: calB}}
	must(g.Publish(ctx, t400))
	if b := bob.got(); len(b) != 4 || !bytes.Contains(b[3], []byte(`"z"`)) {
		t.Fatalf("bob after the join move: %q", b)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP koordi_gateway_rooms Rooms with at least one member socket.
# TYPE koordi_gateway_rooms gauge
koordi_gateway_rooms 4
`), "koordi_gateway_rooms"); err != nil {
		t.Fatal(err)
	}
}

// TestFallsOutOfWindow: a socket so far behind that the window no longer
// holds what comes after its cursor gets one sync:reset at the newest
// position (it refetches instead) when its transport takes the queue, and
// live events after it.
func TestFallsOutOfWindow(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := newTestGateway(t, Config{ReplayMaxEvents: 5, Registerer: reg})
	room := schema.CalendarRoom(uuid(0xA))
	g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA)}}))
	slow := &memConn{limit: 1}
	attach(g, uuid(1), slow, room)
	ctx := context.Background()
	for i := 1; i <= 20; i++ {
		if err := g.Publish(ctx, tx(uint64(i), env(room, "e", fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(slow.got()); n != 1 {
		t.Fatalf("slow socket got %d frames before draining", n)
	}
	slow.drain()
	waitUntil(t, "the reset", func() bool { return len(slow.got()) == 2 })
	if got := string(slow.got()[1]); got != `42["sync:reset",{"reason":"replay_unavailable"},"0000000000000014-00000000"]` {
		t.Fatalf("after falling out: %q", got)
	}
	slow.drain()
	if err := g.Publish(ctx, tx(21, env(room, "e", `21`))); err != nil {
		t.Fatal(err)
	}
	if got := slow.got(); len(got) != 3 || !bytes.Contains(got[2], []byte(`"0000000000000015-00000000"`)) {
		t.Fatalf("live after the reset: %q", got)
	}
	if v := testutil.ToFloat64(g.metrics.fellBehind); v != 1 {
		t.Fatalf("catch-up resets = %v", v)
	}
}

// waitUntil polls cond for a few seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPublishAppliesMovesInPlace: a transaction's moves apply at their place
// among its events — a joined user gets member:added and what follows, a
// removed one nothing after the leave but the user room's copy, a closed
// room nothing after calendar:deleted — and a transaction sent again does not
// move anyone a second time.
func TestPublishAppliesMovesInPlace(t *testing.T) {
	g := newTestGateway(t, Config{})
	bobID, aliceID := uuid(2), uuid(1)
	calA, calB := schema.CalendarRoom(uuid(0xA)), schema.CalendarRoom(uuid(0xB))
	bob, alice := &memConn{}, &memConn{}
	attach(g, bobID, bob, schema.UserRoom(bobID))
	attach(g, aliceID, alice, schema.UserRoom(aliceID), calB)
	ctx := context.Background()
	t1 := tx(100,
		env(calA, schema.MemberAdded, `0`),
		env(calA, "a", `1`),
		env(calA, schema.MemberRemoved, `2`),
		env(schema.UserRoom(bobID), schema.MemberRemoved, `3`),
		env(calA, "a", `4`),
		env(calB, schema.CalendarDeleted, `5`),
		env(calB, "b", `6`),
	)
	t1.Moves = []schema.Move{
		{At: 0, Op: schema.MoveJoin, User: bobID, Room: calA},
		{At: 2, Op: schema.MoveLeave, User: bobID, Room: calA},
		{At: 6, Op: schema.MoveClose, Room: calB},
	}
	if err := g.Publish(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if got := payloadsOf(bob); got != "0,1,3" {
		t.Errorf("bob got %s, want 0,1,3", got)
	}
	if got := payloadsOf(alice); got != "5" {
		t.Errorf("alice got %s, want 5", got)
	}
	// Sent again after a replication reconnect: dropped, and so are its moves.
	if err := g.Publish(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if err := g.Publish(ctx, tx(200, env(calA, "a", `7`), env(calB, "b", `8`))); err != nil {
		t.Fatal(err)
	}
	if got := payloadsOf(bob); got != "0,1,3" {
		t.Errorf("bob after the duplicate: %s, want 0,1,3", got)
	}
	if got := payloadsOf(alice); got != "5" {
		t.Errorf("alice after the duplicate: %s, want 5", got)
	}
}

func TestReset(t *testing.T) {
	g := newTestGateway(t, Config{})
	c := &memConn{}
	attach(g, uuid(1), c, schema.UserRoom(uuid(1)))
	if err := g.Publish(context.Background(), tx(10, env(schema.UserRoom(uuid(1)), "e", `{}`))); err != nil {
		t.Fatal(err)
	}
	g.Reset("slot_recreated", nil)
	got := c.got()
	if len(got) != 2 || string(got[1]) != `42["sync:reset",{"reason":"slot_recreated"},"000000000000000A-00000001"]` {
		t.Fatalf("got %q", got)
	}
	if g.window.covers(off(9, 0), true) || !g.window.beforeReset(off(9, 0)) {
		t.Fatal("a position before the reset is still resumable")
	}
}

// TestResetGapFloor: every session from before a sync:reset gap is told to
// refetch — including one that had received everything before it, and one
// from a process whose successor resets before publishing anything (the
// slot was invalidated while serve was down) — and sessions that start
// after the gap are not.
func TestResetGapFloor(t *testing.T) {
	t.Run("after publishing", func(t *testing.T) {
		w := newWindow(time.Minute, 100, 1<<20)
		w.add(entry{off: off(10, 1), at: time.Now()})
		w.reset()
		for _, pos := range []schema.Offset{off(9, 0), off(10, 1)} {
			if w.covers(pos, true) || !w.beforeReset(pos) {
				t.Errorf("position %v from before the gap: covers=%v beforeReset=%v", pos, w.covers(pos, true), w.beforeReset(pos))
			}
		}
		fresh := w.position()
		if !w.covers(fresh, true) || w.beforeReset(fresh) {
			t.Errorf("a session started after the gap at %v is treated as before it", fresh)
		}
	})
	t.Run("before publishing, then the stream start", func(t *testing.T) {
		w := newWindow(time.Minute, 100, 1<<20)
		w.reset()                 // OnReset: the slot was recreated
		w.resumeAfter(off(50, 0)) // OnStream: the new slot starts here
		for _, pos := range []schema.Offset{{}, off(10, 1), off(49, 3)} {
			if w.covers(pos, false) || !w.beforeReset(pos) {
				t.Errorf("position %v from a previous process: covers=%v beforeReset=%v", pos, w.covers(pos, false), w.beforeReset(pos))
			}
		}
		if pos := off(50, 0); !w.covers(pos, false) || w.beforeReset(pos) {
			t.Errorf("position at the new stream start is treated as before the gap")
		}
	})
}

// countConn is the cheapest possible socket, for the fan-out benchmark.
type countConn struct{ n atomic.Int64 }

func (c *countConn) OfferFrames(_ []*engineio.Frames, refs []engineio.FrameRef) int {
	c.n.Add(int64(len(refs)))
	return len(refs)
}
func (c *countConn) Send(socketio.Frame) bool { c.n.Add(1); return true }
func (c *countConn) Queued() int              { return 0 }
func (c *countConn) QueueCap() int            { return 4096 }
func (c *countConn) Drained() <-chan struct{} { return nil }
func (c *countConn) Done() <-chan struct{}    { return nil }
func (c *countConn) Transport() string        { return "websocket" }
func (c *countConn) Disconnect()              {}

// BenchmarkPublishFanOut publishes one event to a room of 10,000 sockets.
// allocs/op covers the whole event (one encoding, one replay entry); the
// custom metric divides by recipients and must stay ~0.
func BenchmarkPublishFanOut(b *testing.B) {
	const sockets = 10_000
	g := newTestGateway(b, Config{ReplayMaxEvents: 1024})
	r := schema.CalendarRoom(uuid(1))
	conns := make([]*countConn, sockets)
	for i := range conns {
		conns[i] = &countConn{}
		attach(g, uuid(i+10), conns[i], r)
	}
	payload := json.RawMessage(`{"event_id":"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b","event_title":"Swimming","event_calendar_id":"00000000-0000-4000-8000-000000000001"}`)
	t := schema.Transaction{Events: []schema.Envelope{{Room: r, Event: schema.EventCreated, Data: payload}}}
	ctx := context.Background()
	var ms runtimeMemStats
	b.ReportAllocs()
	b.ResetTimer()
	ms.start()
	for i := 0; i < b.N; i++ {
		t.CommitLSN = uint64(i + 1)
		t.Events[0].Offset = off(uint64(i+1), 0)
		if err := g.Publish(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	allocs := ms.stop()
	b.ReportMetric(float64(allocs)/float64(b.N*sockets), "allocs/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*sockets), "ns/delivery")
	if got := conns[sockets-1].n.Load(); got != int64(b.N) {
		b.Fatalf("last socket got %d of %d", got, b.N)
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"short secret", Config{JWTSecret: []byte("short")}, auth.ErrWeakSecret},
		{"no key at all", Config{}, auth.ErrNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(tt.cfg)
			if err == nil {
				_ = g.Shutdown(context.Background())
				t.Fatal("New accepted the config")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// TestLatencyCountsOnlyLiveCommits: the commit-to-send histogram measures
// delivery, so transactions committed before the process started (the
// replay window decoded again after a restart) and duplicates stay out.
func TestLatencyCountsOnlyLiveCommits(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := newTestGateway(t, Config{Registerer: reg})
	count := func() uint64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "koordi_gateway_commit_to_send_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("histogram not registered")
		return 0
	}
	publish := func(lsn uint64, committed time.Time) {
		t.Helper()
		x := tx(lsn, env(schema.UserRoom(uuid(1)), "e", `{}`))
		x.CommitTime = committed
		if err := g.Publish(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	publish(10, g.started.Add(-time.Minute)) // re-decoded after a restart
	publish(11, time.Now())                  // live
	publish(11, time.Now())                  // duplicate of a live one
	if got := count(); got != 1 {
		t.Fatalf("latency observations = %d, want 1 (the live commit only)", got)
	}
	// A transaction whose moves fall between its events is one sample,
	// taken after all of it.
	moved := tx(12, env(schema.UserRoom(uuid(1)), "e", `{}`), env(schema.CalendarRoom(uuid(2)), "e", `{}`))
	moved.CommitTime = time.Now()
	moved.Moves = []schema.Move{{At: 1, Op: schema.MoveJoin, User: uuid(1), Room: schema.CalendarRoom(uuid(2))}}
	if err := g.Publish(context.Background(), moved); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 2 {
		t.Fatalf("latency observations = %d after a transaction with moves, want 2", got)
	}
}

// TestCloseLeavesNoLaggingMember: a socket that falls behind in the very
// transaction that deletes its calendar is not left a member of the closed
// room (a leak, and a member of the room should its name come back).
func TestCloseLeavesNoLaggingMember(t *testing.T) {
	g := newTestGateway(t, Config{})
	aliceID, calB := uuid(1), schema.CalendarRoom(uuid(0xB))
	alice := &memConn{limit: 1}
	attach(g, aliceID, alice, schema.UserRoom(aliceID), calB)
	ctx := context.Background()
	if err := g.Publish(ctx, tx(100, env(calB, "b", `1`))); err != nil { // fills her queue
		t.Fatal(err)
	}
	t2 := tx(200, env(calB, schema.CalendarDeleted, `2`))
	t2.Moves = []schema.Move{{At: 1, Op: schema.MoveClose, Room: calB}}
	if err := g.Publish(ctx, t2); err != nil {
		t.Fatal(err)
	}
	g.idx.mu.RLock()
	rm := g.idx.rooms[calB]
	g.idx.mu.RUnlock()
	if rm != nil && len(rm.members) > 0 {
		t.Fatalf("the closed room still has %d members", len(rm.members))
	}
}
