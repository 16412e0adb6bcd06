package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

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
		t.Fatalf("alice: %d frames in %d OfferAll calls, want 10 in 1", n, calls)
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

	// A move in the middle: the frames before it are queued before it
	// applies, so the joining user gets only what follows.
	txs = txs[:0]
	for i := range 4 {
		txs = append(txs, tx(uint64(2000+100*i), env(calA, "e", fmt.Sprint(10+i))))
	}
	txs[2].Moves = []schema.Move{{At: 0, Op: schema.MoveJoin, User: uuid(3), Room: calA}}
	carol := g.idx.users[uuid(3)][0].conn.(*memConn)
	calls := alice.calls
	if err := g.PublishBatch(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if got := alice.calls - calls; got != 2 {
		t.Errorf("alice: %d OfferAll calls for a batch with one move, want 2", got)
	}
	if got := payloadsOf(carol); got != "12,13" {
		t.Errorf("the user joining at the third transaction got %s, want 12,13", got)
	}
}

// TestPublishBatchAsOneByOne: whatever the batches, every socket ends up
// with exactly what Publish one transaction at a time gives it — moves
// applied in place, sockets with small queues catching up from the window.
func TestPublishBatchAsOneByOne(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 13))
		txs := randomTransactions(rng, 60)
		one := publishAll(t, txs, func(g *Gateway, txs []schema.Transaction) error {
			for _, tx := range txs {
				if err := g.Publish(context.Background(), tx); err != nil {
					return err
				}
			}
			return nil
		})
		batched := publishAll(t, txs, func(g *Gateway, txs []schema.Transaction) error {
			for len(txs) > 0 {
				n := min(len(txs), 1+rng.IntN(12))
				if err := g.PublishBatch(context.Background(), txs[:n]); err != nil {
					return err
				}
				txs = txs[n:]
			}
			return nil
		})
		delivered := 0
		for i := range one {
			if one[i] != batched[i] {
				t.Fatalf("seed %d, socket %d:\n one by one: %s\n    batched: %s", seed, i, one[i], batched[i])
			}
			delivered += strings.Count(one[i], ",") + 1
		}
		if delivered < 100 {
			t.Fatalf("seed %d: only %d deliveries: the test exercises nothing", seed, delivered)
		}
	}
}

// randomTransactions makes n transactions of events in the rooms of four
// calendars and six users, a third of them with a move.
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

// publishAll publishes a copy of txs with publish to a new gateway with
// eight sockets (two with queues of three), drains them until nobody catches
// up, and returns each socket's payloads.
func publishAll(t *testing.T, txs []schema.Transaction, publish func(*Gateway, []schema.Transaction) error) []string {
	t.Helper()
	g := newTestGateway(t, Config{})
	var conns []*memConn
	for i := range 8 {
		user := uuid(1 + i%6)
		c := &memConn{}
		if i%4 == 3 {
			c.limit = 3
		}
		rooms := []string{schema.UserRoom(user), schema.CalendarRoom(uuid(0xA + i%4))}
		if i%3 == 0 {
			rooms = append(rooms, schema.CalendarRoom(uuid(0xB+i%3)))
		}
		attach(g, user, c, rooms...)
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
