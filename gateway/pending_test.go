package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

// TestFlushSetsAreByRoom: the frames a flush queues are shared by room, so
// a socket's queue points only into sets of its own frames. One set of the
// whole batch would let a socket of a quiet room that drains slowly keep
// every busy room's frames alive.
func TestFlushSetsAreByRoom(t *testing.T) {
	g := newTestGateway(t, Config{})
	busy, quiet := schema.CalendarRoom(uuid(0xA)), schema.CalendarRoom(uuid(0xB))
	var conns []*memConn
	for i := range 20 {
		c := &memConn{}
		attach(g, uuid(1+i), c, busy)
		conns = append(conns, c)
	}
	slow := &memConn{}
	attach(g, uuid(0x40), slow, quiet)
	both := &memConn{}
	attach(g, uuid(0x41), both, busy, quiet)
	var txs []schema.Transaction
	for i := range 20 {
		var envs []schema.Envelope
		for j := range 50 {
			envs = append(envs, env(busy, "e", fmt.Sprint(i, "-", j)))
		}
		envs = append(envs, env(quiet, "q", fmt.Sprint(i)))
		txs = append(txs, tx(uint64(100*(i+1)), envs...))
	}
	if err := g.PublishBatch(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if n := len(slow.got()); n != 20 {
		t.Fatalf("the quiet room's socket got %d frames, want 20", n)
	}
	if n := len(both.got()); n != 20*51 {
		t.Fatalf("the socket in both rooms got %d frames, want %d", n, 20*51)
	}
	for i, c := range append(conns, slow, both) {
		if c.unowed != 0 {
			t.Errorf("socket %d was queued into sets with %d frames not its own", i, c.unowed)
		}
	}
}

// TestPublishBatchQueuesOncePerSocket: a batch queues each socket's frames
// of all its transactions in one call, and again only after a move; a
// socket whose queue takes part of them gets the rest, in order, from the
// window.
func TestPublishBatchQueuesOncePerSocket(t *testing.T) {
	g := newTestGateway(t, Config{})
	calA := schema.CalendarRoom(uuid(0xA))
	alice, small := &memConn{}, &memConn{limit: 3}
	attach(g, uuid(1), alice, calA)
	attach(g, uuid(2), small, calA)
	attach(g, uuid(3), &memConn{}, schema.UserRoom(uuid(3)))
	var txs []schema.Transaction
	for i := range 10 {
		txs = append(txs, tx(uint64(100*(i+1)), env(calA, "e", fmt.Sprint(i))))
	}
	if err := g.PublishBatch(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if n, calls := len(alice.got()), alice.calls; n != 10 || calls != 1 {
		t.Fatalf("alice: %d frames in %d OfferFrames calls, want 10 in 1", n, calls)
	}
	if n := len(small.got()); n != 3 {
		t.Fatalf("a socket with room for 3 got %d frames at once", n)
	}
	waitUntil(t, "the small socket catches up", func() bool {
		small.drain()
		return len(small.got()) == 10
	})
	if got, want := payloadsOf(small), payloadsOf(alice); got != want {
		t.Fatalf("the small socket got %s after catching up, want %s", got, want)
	}

	// A batch of bulk transactions to one room: a socket is owed at most
	// maxOwed frames between flushes, so its writer drains in between.
	txs = txs[:0]
	for i := range 5 {
		var envs []schema.Envelope
		for j := range 300 {
			envs = append(envs, env(calA, "e", fmt.Sprint(j)))
		}
		txs = append(txs, tx(uint64(1000+100*i), envs...))
	}
	calls := alice.calls
	if err := g.PublishBatch(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if got, want := alice.calls-calls, (5*300+maxOwed-1)/maxOwed; got != want {
		t.Errorf("1,500 frames to one socket in %d OfferFrames calls, want %d (at most %d a flush)", got, want, maxOwed)
	}

	// A move in the middle: the frames before it are queued before it
	// applies, so the joining user gets only what follows.
	txs = txs[:0]
	for i := range 4 {
		txs = append(txs, tx(uint64(2000+100*i), env(calA, "e", fmt.Sprint(10+i))))
	}
	txs[2].Moves = []schema.Move{{At: 0, Op: schema.MoveJoin, User: uuid(3), Room: calA}}
	carol := g.idx.users[uuid(3)][0].conn.(*memConn)
	calls = alice.calls
	if err := g.PublishBatch(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if got := alice.calls - calls; got != 2 {
		t.Errorf("alice: %d OfferFrames calls for a batch with one move, want 2", got)
	}
	if got := payloadsOf(carol); got != "12,13" {
		t.Errorf("the user joining at the third transaction got %s, want 12,13", got)
	}
}

// TestPublishBatchMatchesMembership: whatever the batches, every socket ends
// up with exactly the events of the rooms its user was in when each was
// published — moves applied in place, sockets with small queues falling
// behind at any flush and catching up from the window.
func TestPublishBatchMatchesMembership(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 13))
		txs := randomTransactions(rng, 60)
		want := expectedPayloads(txs)
		delivered := 0
		for _, w := range want {
			delivered += len(w)
		}
		if delivered < 100 {
			t.Fatalf("seed %d: only %d deliveries: the test exercises nothing", seed, delivered)
		}
		for _, mode := range []string{"one by one", "batched"} {
			got := publishAll(t, txs, func(g *Gateway, txs []schema.Transaction) error {
				for len(txs) > 0 {
					n := 1
					if mode == "batched" {
						n = min(len(txs), 1+rng.IntN(12))
					}
					if err := g.PublishBatch(context.Background(), txs[:n]); err != nil {
						return err
					}
					txs = txs[n:]
				}
				return nil
			})
			for i := range want {
				if w := strings.Join(want[i], ","); got[i] != w {
					t.Fatalf("seed %d, %s, socket %d:\n got: %s\nwant: %s", seed, mode, i, got[i], w)
				}
			}
		}
	}
}

// The sockets of publishAll: socket i is of user i%6, in its user's room and
// the calendars userCalendars gives the user; sockets 3 and 7 have queues of
// three.
const testSockets = 8

func socketUser(i int) int { return i % 6 }

func userCalendars(u int) []string {
	cals := []string{schema.CalendarRoom(uuid(0xA + u%4))}
	if u%3 == 0 {
		cals = append(cals, schema.CalendarRoom(uuid(0xB+u%3)))
	}
	return cals
}

// randomTransactions makes n transactions of events in the rooms of four
// calendars and six users, a third of them with a calendar move.
func randomTransactions(rng *rand.Rand, n int) []schema.Transaction {
	var txs []schema.Transaction
	seq := 0
	for i := range n {
		var envs []schema.Envelope
		for range 1 + rng.IntN(5) {
			room := schema.CalendarRoom(uuid(0xA + rng.IntN(4)))
			if rng.IntN(4) == 0 {
				room = schema.UserRoom(uuid(1 + rng.IntN(6)))
			}
			seq++
			envs = append(envs, env(room, "e", fmt.Sprint(seq)))
		}
		t := tx(uint64(100*(i+1)), envs...)
		if rng.IntN(3) == 0 {
			m := schema.Move{At: rng.IntN(len(envs) + 1), User: uuid(1 + rng.IntN(6)), Room: schema.CalendarRoom(uuid(0xA + rng.IntN(4)))}
			switch rng.IntN(5) {
			case 0:
				m.Op, m.User = schema.MoveClose, ""
			case 1, 2:
				m.Op = schema.MoveLeave
			default:
				m.Op = schema.MoveJoin
			}
			t.Moves = []schema.Move{m}
		}
		txs = append(txs, t)
	}
	return txs
}

// expectedPayloads follows the memberships through txs: each socket's
// payloads are those of the events published while its user was in the
// event's room.
func expectedPayloads(txs []schema.Transaction) [][]string {
	rooms := make([]map[string]bool, testSockets)
	for i := range rooms {
		u := socketUser(i)
		rooms[i] = map[string]bool{schema.UserRoom(uuid(1 + u)): true}
		for _, c := range userCalendars(u) {
			rooms[i][c] = true
		}
	}
	want := make([][]string, testSockets)
	for _, tx := range txs {
		moves := tx.Moves
		for i := 0; i <= len(tx.Events); i++ {
			for ; len(moves) > 0 && moves[0].At <= i; moves = moves[1:] {
				m := moves[0]
				for s := range rooms {
					switch {
					case m.Op == schema.MoveClose:
						delete(rooms[s], m.Room)
					case uuid(1+socketUser(s)) != m.User:
					case m.Op == schema.MoveJoin:
						rooms[s][m.Room] = true
					default:
						delete(rooms[s], m.Room)
					}
				}
			}
			if i == len(tx.Events) {
				break
			}
			for s := range rooms {
				if rooms[s][tx.Events[i].Room] {
					want[s] = append(want[s], string(tx.Events[i].Data))
				}
			}
		}
	}
	return want
}

// publishAll publishes a copy of txs with publish to a new gateway whose
// membership view and sockets are as testSockets says, drains the sockets
// until nobody catches up, and returns each socket's payloads.
func publishAll(t *testing.T, txs []schema.Transaction, publish func(*Gateway, []schema.Transaction) error) []string {
	t.Helper()
	g := newTestGateway(t, Config{})
	view := map[string][]string{}
	for u := range 6 {
		for _, c := range userCalendars(u) {
			_, cal, _ := schema.ParseRoom(c)
			view[uuid(1+u)] = append(view[uuid(1+u)], cal)
		}
	}
	g.LoadMemberships(members(view))
	var conns []*memConn
	for i := range testSockets {
		u := socketUser(i)
		c := &memConn{}
		if i%4 == 3 {
			c.limit = 3
		}
		attach(g, uuid(1+u), c, append([]string{schema.UserRoom(uuid(1 + u))}, userCalendars(u)...)...)
		conns = append(conns, c)
	}
	copies := make([]schema.Transaction, len(txs))
	for i, tx := range txs {
		tx.Events, tx.Moves = slices.Clone(tx.Events), slices.Clone(tx.Moves)
		copies[i] = tx
	}
	if err := publish(g, copies); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every socket caught up", func() bool {
		for _, c := range conns {
			c.drain()
		}
		g.idx.mu.RLock()
		defer g.idx.mu.RUnlock()
		return g.idx.lagging == 0
	})
	var out []string
	for _, c := range conns {
		out = append(out, payloadsOf(c))
	}
	return out
}

// TestFallingBehindKeepsMembershipInPlace: a socket that falls behind right
// after its user joined a room gets none of that room's events from before
// the join, and one that falls behind before its user leaves a room gets
// that room's events until the leave.
func TestFallingBehindKeepsMembershipInPlace(t *testing.T) {
	ctx := context.Background()
	calA, calB := schema.CalendarRoom(uuid(0xA)), schema.CalendarRoom(uuid(0xB))
	for _, tc := range []struct {
		name  string
		rooms []string
		move  schema.MoveOp
		want  string
	}{
		{"join", []string{calA}, schema.MoveJoin, "1,3"},
		{"leave", []string{calA, calB}, schema.MoveLeave, "1,2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t, Config{})
			c := &memConn{limit: 1}
			attach(g, uuid(1), c, tc.rooms...)
			if err := g.Publish(ctx, tx(100, env(calA, "e", "1"))); err != nil {
				t.Fatal(err)
			}
			// Not drained: the queue of one is full, so the socket falls
			// behind at this transaction's first frame for it.
			t200 := tx(200, env(calB, "e", "2"), env(calB, "e", "3"))
			t200.Moves = []schema.Move{{At: 1, Op: tc.move, User: uuid(1), Room: calB}}
			if err := g.Publish(ctx, t200); err != nil {
				t.Fatal(err)
			}
			waitLive(t, g, c)
			if got := payloadsOf(c); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}
