package gateway

import (
	"context"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

// TestClientJoinWhileCatchingUp: a socket catching up whose client joins a
// calendar its user was accepted into after the socket's cursor gets none
// of that calendar's events from before the acceptance; and a leave while
// catching up is not undone by a join move the catch-up replays. Either
// takes effect where it would have for a live socket: at the newest
// position when the client asked.
func TestClientJoinWhileCatchingUp(t *testing.T) {
	ctx := context.Background()
	calA, calB := schema.CalendarRoom(uuid(0xA)), schema.CalendarRoom(uuid(0xB))
	for _, tc := range []struct {
		name string
		join bool
		want string
	}{
		{"join", true, "1,2,4,5"},
		// Event 4 was published before the leave, as a live socket would
		// have had it; the join move the catch-up replays does not undo
		// the leave, so 5 does not follow.
		{"leave", false, "1,2,4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t, Config{})
			g.LoadMemberships(members(map[string][]string{uuid(1): {uuid(0xB)}}))
			c := &memConn{limit: 1}
			cl := attach(g, uuid(1), c, calB)
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(g.Publish(ctx, tx(100, env(calB, "e", "1"))))
			// The queue of one is full: the socket catches up from here.
			must(g.Publish(ctx, tx(200, env(calB, "e", "2"))))
			must(g.Publish(ctx, tx(300, env(calA, "e", "3")))) // before its user's acceptance
			t400 := tx(400, env(calA, "e", "4"))
			t400.Moves = []schema.Move{{At: 0, Op: schema.MoveJoin, User: uuid(1), Room: calA}}
			must(g.Publish(ctx, t400))
			// The client's own move, as Event handles it, while catching up.
			g.idx.mu.Lock()
			if !cl.lagging {
				g.idx.mu.Unlock()
				t.Fatal("the socket is not catching up: the test does not exercise it")
			}
			if tc.join {
				if g.idx.view.member(uuid(1), uuid(0xA)) {
					g.idx.join(cl, calA)
				}
			} else {
				g.idx.leave(cl, calA)
			}
			g.idx.mu.Unlock()
			waitUntil(t, "the socket caught up", func() bool {
				c.drain()
				g.idx.mu.RLock()
				defer g.idx.mu.RUnlock()
				return g.idx.lagging == 0
			})
			must(g.Publish(ctx, tx(500, env(calA, "e", "5"))))
			c.drain()
			if got := payloadsOf(c); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}
