package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/koordi/koordi-realtime/gateway/socketio"
)

// send writes one text frame.
func (c *rawClient) send(msg string) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads the next message and fails unless it starts with prefix.
func (c *rawClient) expect(what, prefix string) string {
	c.t.Helper()
	m, err := c.read()
	if err != nil || !strings.HasPrefix(m, prefix) {
		c.t.Fatalf("%s: %q, %v; want %s…", what, m, err, prefix)
	}
	return m
}

// clock is a Config.Now the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const rateLimitedConnect = `44{"message":"rate limit exceeded: at most 6 connects and events a minute on one connection","data":{"error_code":"RATE_LIMITED"}}`

// TestRateLimitAcrossConnects: a client that sends CONNECT and join:calendar
// again and again on one Engine.IO connection spends one budget, the
// connection's: each CONNECT costs a token, so after RateLimit tokens the
// next CONNECT is refused, whatever sockets came and went. Refused
// CONNECTs (a bad token, an unknown namespace) cost the same. The bucket
// refills over the minute; persistent abuse closes the connection after the
// CONNECT_ERROR.
func TestRateLimitAcrossConnects(t *testing.T) {
	clk := &clock{now: time.Now()}
	s := startServer(t, Config{RateLimit: 6, AbuseLimit: 3, Now: clk.Now})
	user, cal := uuid(0xC1), uuid(0xC2)
	s.setMembers(user, cal)
	auth := `{"token":"` + s.token(t, user, time.Hour) + `"}`

	t.Run("CONNECT and join", func(t *testing.T) {
		c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
		// Three rounds of CONNECT + join spend the six tokens.
		for round := 1; round <= 3; round++ {
			c.connected()
			c.send(fmt.Sprintf(`42%d["join:calendar","%s"]`, round, cal))
			c.expect(fmt.Sprintf("join %d", round), fmt.Sprintf(`43%d[{"ok":true`, round))
			c.send("40" + auth)
		}
		c.expect("CONNECT 4", rateLimitedConnect)
		// A minute later the bucket is full again.
		clk.advance(time.Minute)
		c.send("40" + auth)
		c.connected()
	})

	t.Run("refused CONNECTs", func(t *testing.T) {
		c := dialRaw(t, s.url, map[string]any{"token": "not a token"})
		c.expect("CONNECT 1", `44{"message":"Authentication error`)
		for i := 2; i <= 4; i++ {
			c.send(`40{"token":"not a token"}`)
			c.expect(fmt.Sprintf("CONNECT %d", i), `44{"message":"Authentication error`)
		}
		for i := 5; i <= 6; i++ {
			c.send("40/admin,")
			c.expect(fmt.Sprintf("CONNECT %d", i), `44/admin,{"message":"Invalid namespace"}`)
		}
		// Even a good token now: the connection's budget is spent.
		c.send("40" + auth)
		c.expect("CONNECT 7", rateLimitedConnect)
		c.send("40/admin,")
		c.expect("CONNECT 8", `44/admin,{"message":"rate limit exceeded`)
		// The third refusal within a minute (AbuseLimit) closes the
		// connection once its CONNECT_ERROR is written.
		c.send("40" + auth)
		c.expect("CONNECT 9", rateLimitedConnect)
		if m, err := c.read(); err == nil {
			t.Fatalf("after abuse: %q, want the connection closed", m)
		}
	})
	if got := testutilValue(s.g.metrics.rateLimited); got != 4 {
		t.Fatalf("rate limited = %v, want 4", got)
	}
}

// connectUser opens a raw connection with a token of user and waits for
// its CONNECT to be accepted.
func (s *testServer) connectUser(t *testing.T, user string) *rawClient {
	t.Helper()
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	return c
}

// join sends join:calendar with ack id and expects its ack to begin with
// {"ok":want.
func (c *rawClient) join(id int, cal, want string) {
	c.t.Helper()
	c.send(fmt.Sprintf(`42%d["join:calendar","%s"]`, id, cal))
	c.expect(fmt.Sprintf("join %d", id), fmt.Sprintf(`43%d[{"ok":%s`, id, want))
}

// TestRateLimitPerUser: a user's sockets on two connections share one
// budget; another user's is its own.
func TestRateLimitPerUser(t *testing.T) {
	s := startServer(t, Config{RateLimit: 4, AbuseLimit: 100})
	user, other, cal := uuid(0xC3), uuid(0xC4), uuid(0xC5)
	s.setMembers(user, cal)
	s.setMembers(other, cal)
	a := s.connectUser(t, user)
	b := s.connectUser(t, user)
	o := s.connectUser(t, other)
	s.waitSockets(t, 3)
	join := func(c *rawClient, id int, want string) { c.join(id, cal, want) }
	join(a, 1, "true")
	join(a, 2, "true")
	join(b, 3, "true")
	join(b, 4, "true")
	// b's connection has a token left (4, less its CONNECT and two
	// events), the user has none.
	join(b, 5, `false,"error_code":"RATE_LIMITED"`)
	join(a, 6, `false,"error_code":"RATE_LIMITED"`)
	join(o, 7, "true")
	// A third connection of the user, its own budget almost full: only the
	// user's budget can refuse its event.
	d := s.connectUser(t, user)
	s.waitSockets(t, 4)
	_ = a.ws.CloseNow()
	s.waitSockets(t, 3)
	join(b, 8, `false,"error_code":"RATE_LIMITED"`) // one socket gone, the budget stays
	join(d, 9, `false,"error_code":"RATE_LIMITED"`)
}

// TestRateLimitBudgetsHeld: connected sockets that send nothing hold no
// bucket (no user budget; their connections only the mark of their one
// CONNECT), and a user's budget is freed with its last socket.
func TestRateLimitBudgetsHeld(t *testing.T) {
	s := startServer(t, Config{RateLimit: 4})
	user, cal := uuid(0xC8), uuid(0xC9)
	s.setMembers(user, cal)
	a := s.connectUser(t, user)
	b := s.connectUser(t, user)
	s.waitSockets(t, 2)
	held := func() (budgets int, values []any) {
		s.g.idx.mu.RLock()
		defer s.g.idx.mu.RUnlock()
		for _, c := range s.g.idx.users[user] {
			values = append(values, c.conn.(*socketio.Socket).ConnValue())
		}
		return len(s.g.idx.budgets), values
	}
	if n, v := held(); n != 0 || len(v) != 2 || v[0] != (connOpened{}) || v[1] != (connOpened{}) {
		t.Fatalf("idle sockets: %d user budgets, connection values %v", n, v)
	}
	a.send(`421["join:calendar","` + cal + `"]`)
	a.expect("join", `431[{"ok":true`)
	if n, v := held(); n != 1 || len(v) != 2 {
		t.Fatalf("after an event: %d user budgets, connection values %v", n, v)
	}
	_ = a.ws.CloseNow()
	s.waitSockets(t, 1)
	if n, _ := held(); n != 1 {
		t.Fatalf("%d user budgets while the user has a socket, want 1", n)
	}
	_ = b.ws.CloseNow()
	s.waitSockets(t, 0)
	if n, _ := held(); n != 0 {
		t.Fatalf("%d user budgets left after the user's last socket", n)
	}
}

// TestRateLimitKeptAcrossOldestClosed: with MaxSocketsPerUser 1 each new
// socket closes the user's only other one; the user's budget is not freed
// in between, so reconnecting on new connections does not refill it.
func TestRateLimitKeptAcrossOldestClosed(t *testing.T) {
	s := startServer(t, Config{RateLimit: 4, AbuseLimit: 100, MaxSocketsPerUser: 1})
	user, cal := uuid(0xC6), uuid(0xC7)
	s.setMembers(user, cal)
	id := 0
	for round := range 3 {
		c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
		c.connected()
		s.waitSockets(t, 1)
		want := "true"
		if round == 2 {
			want = `false,"error_code":"RATE_LIMITED"` // two a round: the user's four are spent
		}
		for range 2 {
			id++
			c.send(fmt.Sprintf(`42%d["join:calendar","%s"]`, id, cal))
			c.expect(fmt.Sprintf("join %d", id), fmt.Sprintf(`43%d[{"ok":%s`, id, want))
		}
	}
}

// TestRateLimitUserRefusalKeepsConnectionToken: an event the user's budget
// refuses costs its connection nothing: the user's other connection spent
// the user's budget, and this connection can still CONNECT again.
func TestRateLimitUserRefusalKeepsConnectionToken(t *testing.T) {
	clk := &clock{now: time.Now()}
	s := startServer(t, Config{RateLimit: 4, AbuseLimit: 100, Now: clk.Now})
	user, cal := uuid(0xC6), uuid(0xC7)
	s.setMembers(user, cal)
	a := s.connectUser(t, user)
	b := s.connectUser(t, user)
	s.waitSockets(t, 2)
	join := func(c *rawClient, id int, want string) { c.join(id, cal, want) }
	// a: its CONNECT and three events; the user has one token left.
	join(a, 1, "true")
	join(a, 2, "true")
	join(a, 3, "true")
	// b: its CONNECT and the user's last token: two left on b.
	join(b, 4, "true")
	join(b, 5, `false,"error_code":"RATE_LIMITED"`)
	join(b, 6, `false,"error_code":"RATE_LIMITED"`)
	// The two refusals were the user's: b still has two tokens, one for a
	// CONNECT now and one after.
	b.send(`40{"token":"` + s.token(t, user, time.Hour) + `"}`)
	b.connected()
	b.send(`40{"token":"` + s.token(t, user, time.Hour) + `"}`)
	b.connected()
	b.send(`40{"token":"` + s.token(t, user, time.Hour) + `"}`)
	b.expect("third CONNECT", `44{"message":"rate limit exceeded`)
}
