package gateway

import (
	"context"
	"errors"
	"math/rand"
	"strconv"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

var (
	roomA = schema.CalendarRoom(uuid(0xA))
	roomB = schema.CalendarRoom(uuid(0xB))
)

// moveAsClient makes the client's join:calendar (join) or leave:calendar of
// room as Event does.
func moveAsClient(t *testing.T, g *Gateway, cl *client, room string, join bool) error {
	t.Helper()
	cal, ok := strings.CutPrefix(room, schema.CalendarRoomPrefix)
	if !ok {
		t.Fatalf("%s is not a calendar's room", room)
	}
	return g.moveByClient(cl, cal, join)
}

// waitLive drains c until no socket of g catches up, and then once more:
// the catch-up's last frame (a sync:reset, say) is queued just before the
// socket goes live, and left in a queue of one it would refuse the next
// live event and send the socket back to catching up, racing the test.
// Once live, nothing but the test's own Publish queues to c.
func waitLive(t *testing.T, g *Gateway, c *memConn) {
	t.Helper()
	waitUntil(t, "every socket live", func() bool {
		c.drain()
		g.idx.mu.RLock()
		defer g.idx.mu.RUnlock()
		return g.idx.lagging == 0
	})
	c.drain()
}

// TestClientMovesWhileCatchingUp: a client's join:calendar or leave:calendar
// while its socket catches up takes effect where it would have for a live
// socket, at the window position when the client asked: events published
// before it follow the rooms of then, events after it the rooms it asked
// for, and moves of the window after it (a removal, an acceptance) decide
// the room again.
//
// Each case: user 1's socket, with a queue of one, gets event 1 of roomB and
// is refused event 2, so it catches up from there; before publishes before
// the client's move, after after it; when the socket is live again event 9
// of roomA is published.
func TestClientMovesWhileCatchingUp(t *testing.T) {
	publish := func(t *testing.T, g *Gateway, txs ...schema.Transaction) {
		t.Helper()
		for _, x := range txs {
			if err := g.Publish(context.Background(), x); err != nil {
				t.Fatal(err)
			}
		}
	}
	withMove := func(x schema.Transaction, op schema.MoveOp, room string) schema.Transaction {
		x.Moves = []schema.Move{{At: 0, Op: op, User: uuid(1), Room: room}}
		return x
	}
	for _, tc := range []struct {
		name    string
		member  []string // user 1's calendars in the loaded view
		rooms   []string // its socket's rooms when it connects
		before  []schema.Transaction
		join    bool // the client's move, of roomA
		after   []schema.Transaction
		want    string
		comment string
	}{{
		name: "join after an acceptance", member: []string{uuid(0xB)}, rooms: []string{roomB},
		before: []schema.Transaction{
			tx(300, env(roomA, "e", "3")), // before its user's acceptance
			withMove(tx(400, env(roomA, "e", "4")), schema.MoveJoin, roomA),
		},
		join: true, want: "1,2,4,9",
		comment: "3 came before the user's acceptance: a join must not replay it",
	}, {
		name: "leave after a replayed join", member: []string{uuid(0xB)}, rooms: []string{roomB},
		before: []schema.Transaction{withMove(tx(400, env(roomA, "e", "4")), schema.MoveJoin, roomA)},
		join:   false, want: "1,2,4",
		comment: "4 came before the leave; the join the catch-up replays does not undo the leave",
	}, {
		name: "join, then an event", member: []string{uuid(0xA), uuid(0xB)}, rooms: []string{roomB},
		join:  true,
		after: []schema.Transaction{tx(300, env(roomA, "e", "3"))},
		want:  "1,2,3,9", comment: "3 was published after the join was acked",
	}, {
		name: "leave, then an event", member: []string{uuid(0xA), uuid(0xB)}, rooms: []string{roomA, roomB},
		join:  false,
		after: []schema.Transaction{tx(300, env(roomA, "e", "3"))},
		want:  "1,2", comment: "3 was published after the leave was acked",
	}, {
		name: "leave after an acceptance at the end of a transaction", member: []string{uuid(0xB)}, rooms: []string{roomB},
		before: []schema.Transaction{func() schema.Transaction {
			x := tx(300, env(schema.CalendarRoom(uuid(0xC)), "e", "3"))                       // not the user's calendar
			x.Moves = []schema.Move{{At: 1, Op: schema.MoveJoin, User: uuid(1), Room: roomA}} // after its event
			return x
		}()},
		join: false, after: []schema.Transaction{tx(400, env(roomB, "e", "4"))}, want: "1,2,4",
		// The first chunk (one frame: 2) passes the acceptance and the leave
		// and stops at 4, its cursor at 3: the next walks the acceptance
		// again, and the leave after it again.
		comment: "the acceptance is kept after the newest event's offset: the leave after it must still win, also walked twice",
	}, {
		name: "leave, then removed and accepted again", member: []string{uuid(0xA), uuid(0xB)}, rooms: []string{roomA, roomB},
		join: false,
		after: []schema.Transaction{
			withMove(tx(300, env(roomA, "member:removed", "3")), schema.MoveLeave, roomA),
			withMove(tx(400, env(roomA, "member:added", "4")), schema.MoveJoin, roomA),
		},
		want: "1,2,4,9", comment: "the acceptance after the leave puts the socket back in roomA, as a live one",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t, Config{})
			g.LoadMemberships(members(map[string][]string{uuid(1): tc.member}))
			c := &memConn{limit: 1}
			cl := attach(g, uuid(1), c, tc.rooms...)
			publish(t, g, tx(100, env(roomB, "e", "1")), tx(200, env(roomB, "e", "2")))
			publish(t, g, tc.before...)
			g.idx.mu.RLock()
			lagging := cl.lagging
			g.idx.mu.RUnlock()
			if !lagging {
				t.Fatal("the socket is not catching up: the test does not exercise it")
			}
			if err := moveAsClient(t, g, cl, roomA, tc.join); err != nil {
				t.Fatal(err)
			}
			publish(t, g, tc.after...)
			waitLive(t, g, c)
			publish(t, g, tx(900, env(roomA, "e", "9")))
			c.drain()
			if got := payloadsOf(c); got != tc.want {
				t.Fatalf("got %s, want %s: %s", got, tc.want, tc.comment)
			}
		})
	}
}

// TestClientMovesWhenFallenBehind: a socket whose cursor leaves the window
// while its client's leave waits gets its rooms of the newest position
// (sync:reset) without the calendar it left, unless entries after the
// leave are gone from the window too: a re-acceptance may have been among
// them, and in doubt the socket gets its user's calendars.
func TestClientMovesWhenFallenBehind(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after int // events published before the leave and after it
		wantA         bool
	}{
		{"the window lost only what came before the leave", 5, 0, false},
		{"the window lost what came after the leave too", 0, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t, Config{ReplayMaxEvents: 3})
			g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB)}}))
			c := &memConn{limit: 1}
			cl := attach(g, uuid(1), c, roomA, roomB)
			lsn := uint64(100)
			publish := func(room, v string) {
				t.Helper()
				mustPublish(t, g, tx(lsn, env(room, "e", v)))
				lsn += 100
			}
			publish(roomB, "1")
			publish(roomB, "2") // refused: catching up from here
			for range tc.before {
				publish(roomB, "x")
			}
			if err := moveAsClient(t, g, cl, roomA, false); err != nil {
				t.Fatal(err)
			}
			for range tc.after {
				publish(roomB, "x")
			}
			waitLive(t, g, c)
			publish(roomA, "9")
			c.drain()
			publish(roomB, "10")
			c.drain()
			got := payloadsOf(c)
			if !strings.Contains(got, "replay_unavailable") {
				t.Fatalf("got %s: the socket did not fall out of the window", got)
			}
			if strings.Contains(got, ",9") != tc.wantA || !strings.HasSuffix(got, ",10") {
				t.Fatalf("got %s: want roomB's 10, and roomA's 9 %v", got, tc.wantA)
			}
		})
	}
}

// TestClientMovesJoinThenRemovedWhenFallenBehind: a join while catching up,
// then its user's removal, both out of the window when the socket falls
// out of it: the socket is not put back in the calendar.
func TestClientMovesJoinThenRemovedWhenFallenBehind(t *testing.T) {
	g := newTestGateway(t, Config{ReplayMaxEvents: 3})
	g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB)}}))
	c := &memConn{limit: 1}
	cl := attach(g, uuid(1), c, roomB)
	publish := func(x schema.Transaction) {
		t.Helper()
		mustPublish(t, g, x)
	}
	publish(tx(100, env(roomB, "e", "1")))
	publish(tx(200, env(roomB, "e", "2")))
	if err := moveAsClient(t, g, cl, roomA, true); err != nil {
		t.Fatal(err)
	}
	removed := tx(300, env(roomB, "e", "3"))
	removed.Moves = []schema.Move{{At: 0, Op: schema.MoveLeave, User: uuid(1), Room: roomA}}
	publish(removed)
	for i := range 5 { // the removal and the cursor out of the window
		publish(tx(uint64(400+100*i), env(roomB, "e", "x")))
	}
	waitLive(t, g, c)
	publish(tx(900, env(roomA, "e", "9")))
	c.drain()
	publish(tx(1000, env(roomB, "e", "10")))
	c.drain()
	got := payloadsOf(c)
	if !strings.Contains(got, "replay_unavailable") {
		t.Fatalf("got %s: the socket did not fall out of the window", got)
	}
	if strings.Contains(got, ",9") || !strings.HasSuffix(got, ",10") {
		t.Fatalf("got %s: want roomB's 10 and not roomA's 9, of a calendar its user was removed from", got)
	}
}

// TestClientJoinDuringHold: a live socket whose client joins a calendar
// while the stream is behind and frames are held, and whose queue then
// refuses what follows, catches up from where the join was: never with the
// calendar's events from before it, whether the held batch owed the socket
// frames (queued first, under its rooms of before) or owed it nothing (only
// another socket, so the batch began before the join).
func TestClientJoinDuringHold(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		held []schema.Transaction
		want string
	}{
		{"frames held for the socket", []schema.Transaction{
			tx(100, env(roomB, "e", "1")), tx(200, env(roomA, "e", "2")), tx(300, env(roomB, "e", "3"))}, "0,1,3,4"},
		{"frames held only for another socket", []schema.Transaction{tx(200, env(roomA, "e", "2"))}, "0,4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t, Config{})
			g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB)}, uuid(2): {uuid(0xA)}}))
			c := &memConn{limit: 1}
			cl := attach(g, uuid(1), c, roomB)
			attach(g, uuid(2), &memConn{}, roomA)
			if err := g.Publish(ctx, tx(50, env(roomB, "e", "0"))); err != nil { // its queue of one is full
				t.Fatal(err)
			}
			if err := g.PublishBehind(ctx, tc.held, true); err != nil {
				t.Fatal(err)
			}
			if err := moveAsClient(t, g, cl, roomA, true); err != nil {
				t.Fatal(err)
			}
			if err := g.PublishBehind(ctx, []schema.Transaction{tx(400, env(roomA, "e", "4"))}, false); err != nil {
				t.Fatal(err)
			}
			waitLive(t, g, c)
			if got := payloadsOf(c); got != tc.want {
				t.Fatalf("got %s, want %s: 2 is roomA's from before the join, 4 after it", got, tc.want)
			}
		})
	}
}

// TestClientLeaveAfterTrailingMoveWhileLive: a live socket whose user was
// accepted into a calendar at the end of a transaction (a move after its
// last event) and whose client then leaves that calendar stays out of it
// when its queue fills and it catches up: the catch-up does not walk the
// acceptance again.
func TestClientLeaveAfterTrailingMoveWhileLive(t *testing.T) {
	g := newTestGateway(t, Config{})
	g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xB)}}))
	c := &memConn{limit: 1}
	cl := attach(g, uuid(1), c, roomB)
	accepted := tx(100, env(roomB, "e", "1"))
	accepted.Moves = []schema.Move{{At: 1, Op: schema.MoveJoin, User: uuid(1), Room: roomA}}
	mustPublish(t, g, accepted)
	if err := moveAsClient(t, g, cl, roomA, false); err != nil {
		t.Fatal(err)
	}
	for _, x := range []schema.Transaction{tx(200, env(roomB, "e", "2")), tx(300, env(roomA, "e", "3"))} { // 2 refused: catching up
		mustPublish(t, g, x)
	}
	waitLive(t, g, c)
	mustPublish(t, g, tx(400, env(roomA, "e", "4")))
	c.drain()
	if got := payloadsOf(c); got != "1,2" {
		t.Fatalf("got %s, want 1,2: the client left roomA after its user's acceptance", got)
	}
}

// TestClientMovesBounded: a socket catching up keeps at most maxClientMoves
// of its client's moves; past them a move is refused (its ack says so), and
// toggling one room with nothing published between keeps one move.
func TestClientMovesBounded(t *testing.T) {
	g := newTestGateway(t, Config{})
	cals := make([]string, maxClientMoves+1)
	for i := range cals {
		cals[i] = uuid(0x100 + i)
	}
	g.LoadMemberships(members(map[string][]string{uuid(1): cals}))
	c := &memConn{limit: 1}
	cl := attach(g, uuid(1), c, roomB)
	for _, x := range []schema.Transaction{tx(100, env(roomB, "e", "1")), tx(200, env(roomB, "e", "2"))} {
		mustPublish(t, g, x)
	}
	room := schema.CalendarRoom(cals[0])
	for range 10 {
		for _, join := range []bool{true, false} {
			if err := moveAsClient(t, g, cl, room, join); err != nil {
				t.Fatalf("toggling one room: %v", err)
			}
		}
	}
	for _, cal := range cals[1 : maxClientMoves+1] {
		err := moveAsClient(t, g, cl, schema.CalendarRoom(cal), true)
		if cal == cals[maxClientMoves] {
			if !errors.Is(err, errTooManyMoves) {
				t.Fatalf("move %d past the bound: %v, want errTooManyMoves", maxClientMoves+1, err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	g.idx.mu.RLock()
	n := len(cl.clientMoves)
	g.idx.mu.RUnlock()
	if n != maxClientMoves {
		t.Fatalf("%d moves kept, want %d", n, maxClientMoves)
	}
}

// TestClientMovesLikeALiveSocket: two sockets of one user, one with an
// unbounded queue (live throughout) and one with a queue of two (catching
// up in chunks of one frame, walking parts of the window again after each
// stop), get the same events and client moves in the same order, mixed
// with the stream's removals and acceptances, half of them published while
// the stream is behind (frames held, also for a third socket): they must
// end with the same frames.
func TestClientMovesLikeALiveSocket(t *testing.T) {
	ctx := context.Background()
	rooms := []string{roomA, roomB, schema.CalendarRoom(uuid(0xC))}
	for seed := range int64(60) {
		rng := rand.New(rand.NewSource(seed))
		g := newTestGateway(t, Config{})
		g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB), uuid(0xC)}}))
		live, slow := &memConn{}, &memConn{limit: 2}
		liveCl, slowCl := attach(g, uuid(1), live, rooms...), attach(g, uuid(1), slow, rooms...)
		attach(g, uuid(2), &memConn{}, rooms...) // another user's: held batches owe it what they owe the two
		publish := func(x schema.Transaction) {
			t.Helper()
			// Now and then the stream is behind: frames held across calls.
			if err := g.PublishBehind(ctx, []schema.Transaction{x}, rng.Intn(2) == 0); err != nil {
				t.Fatal(err)
			}
		}
		lsn := uint64(100)
		for step := range 60 {
			room := rooms[rng.Intn(len(rooms))]
			switch r := rng.Intn(10); {
			case r < 6: // an event
				lsn += 100
				publish(tx(lsn, env(room, "e", strconv.Itoa(step))))
			case r < 8: // the stream moves the user
				lsn += 100
				x := tx(lsn, env(roomB, "e", strconv.Itoa(step)))
				op := schema.MoveLeave
				if rng.Intn(2) == 0 {
					op = schema.MoveJoin
				}
				x.Moves = []schema.Move{{At: rng.Intn(2), Op: op, User: uuid(1), Room: room}}
				publish(x)
			default: // the client moves both sockets
				join := rng.Intn(2) == 0
				for _, cl := range []*client{liveCl, slowCl} {
					err := moveAsClient(t, g, cl, room, join)
					if err != nil && !errors.Is(err, errNotMember) {
						t.Fatal(err)
					}
				}
			}
			if rng.Intn(3) == 0 {
				slow.drain()
				// Let its catch-up run: live again, or a chunk queued.
				waitUntil(t, "the slow socket's catch-up", func() bool {
					g.idx.mu.RLock()
					defer g.idx.mu.RUnlock()
					return g.idx.lagging == 0 || slow.Queued() > 0
				})
			}
		}
		if err := g.PublishBehind(ctx, nil, false); err != nil { // the stream caught up
			t.Fatal(err)
		}
		waitLive(t, g, slow)
		live.drain()
		if got, want := payloadsOf(slow), payloadsOf(live); got != want {
			t.Fatalf("seed %d: the slow socket got %s, the live one %s", seed, got, want)
		}
	}
}

// TestClientMoveAfterResetKeepsLaterEvents: a client's move raises its live
// socket's cursor to the window's newest entry; after a gap (Reset) that is
// no longer a move-only transaction from before it, whose offset may lie
// above what the stream publishes next.
func TestClientMoveAfterResetKeepsLaterEvents(t *testing.T) {
	g := newTestGateway(t, Config{})
	g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB)}, uuid(2): {uuid(0xC)}}))
	c := &memConn{}
	cl := attach(g, uuid(1), c, roomB)
	mustPublish(t, g, tx(10, env(roomB, "e", "1")))
	moveOnly := schema.Transaction{CommitLSN: 50, Moves: []schema.Move{{Op: schema.MoveJoin, User: uuid(2), Room: schema.CalendarRoom(uuid(0xC))}}}
	mustPublish(t, g, moveOnly)
	g.Reset("slot_recreated", members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB)}, uuid(2): {uuid(0xC)}}))
	if err := moveAsClient(t, g, cl, roomA, true); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, g, tx(30, env(roomB, "e", "2")))
	c.drain()
	if got := payloadsOf(c); !strings.HasSuffix(got, ",2") {
		t.Fatalf("got %s: event 2, published after the gap, is missing", got)
	}
}

// TestMoveOnlyTransactionSentAgain: a transaction of moves only that the
// stream sends twice moves its sockets once: the second does not undo a
// client's leave that came between.
func TestMoveOnlyTransactionSentAgain(t *testing.T) {
	g := newTestGateway(t, Config{})
	g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xB)}}))
	c := &memConn{}
	cl := attach(g, uuid(1), c, roomB)
	mustPublish(t, g, tx(10, env(roomB, "e", "1")))
	accepted := schema.Transaction{CommitLSN: 50, Moves: []schema.Move{{Op: schema.MoveJoin, User: uuid(1), Room: roomA}}}
	mustPublish(t, g, accepted)
	if err := moveAsClient(t, g, cl, roomA, false); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, g, accepted)
	mustPublish(t, g, tx(60, env(roomA, "e", "2")))
	c.drain()
	if got := payloadsOf(c); got != "1" {
		t.Fatalf("got %s, want 1: the client left roomA after its user's acceptance", got)
	}
}

// TestResetRoomsAreTheUsersCalendars: after a gap each socket's rooms are
// its user's calendars as read after it. A client's leave from before the
// gap no longer holds (the gap may have accepted its user again), and a
// calendar its user left in the gap is left.
func TestResetRoomsAreTheUsersCalendars(t *testing.T) {
	g := newTestGateway(t, Config{})
	g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xB)}}))
	c := &memConn{}
	cl := attach(g, uuid(1), c, roomA, roomB)
	if err := moveAsClient(t, g, cl, roomA, false); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, g, tx(10, env(roomA, "e", "1"), env(roomB, "e", "2")))
	// Read after the gap: still in A, no longer in B, newly in C.
	g.Reset("slot_recreated", members(map[string][]string{uuid(1): {uuid(0xA), uuid(0xC)}}))
	roomC := schema.CalendarRoom(uuid(0xC))
	mustPublish(t, g, tx(30, env(roomA, "e", "3"), env(roomB, "e", "4"), env(roomC, "e", "5")))
	c.drain()
	if got := payloadsOf(c); got != `2,{"reason":"slot_recreated"},3,5` {
		t.Fatalf("got %s, want 2,3,5: before the gap B only (A was left), after it A and C", got)
	}
}

// mustPublish publishes tx, failing the test on an error.
func mustPublish(t *testing.T, g *Gateway, tx schema.Transaction) {
	t.Helper()
	if err := g.Publish(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
}
