package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/koordi/koordi-realtime/schema"
)

// rawClient speaks Engine.IO/Socket.IO over a WebSocket by hand, for the
// recovery cases socket.io-client cannot be made to produce (forged or
// foreign pids).
type rawClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialRaw(t *testing.T, url string, auth any) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &rawClient{t: t, ws: ws}
	if open, err := c.read(); err != nil || !strings.HasPrefix(open, "0{") {
		t.Fatalf("open packet %q, %v", open, err)
	}
	b, _ := json.Marshal(auth)
	if err := ws.Write(ctx, websocket.MessageText, append([]byte("40"), b...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// read returns the next message that is not a ping (pings are answered).
func (c *rawClient) read() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for {
		_, b, err := c.ws.Read(ctx)
		if err != nil {
			return "", err
		}
		if string(b) == "2" {
			_ = c.ws.Write(ctx, websocket.MessageText, []byte("3"))
			continue
		}
		return string(b), nil
	}
}

// connected reads the CONNECT reply and returns its pid.
func (c *rawClient) connected() string {
	c.t.Helper()
	m, err := c.read()
	if err != nil || !strings.HasPrefix(m, "40{") {
		c.t.Fatalf("CONNECT reply %q, %v", m, err)
	}
	var reply struct{ SID, PID string }
	if err := json.Unmarshal([]byte(m[2:]), &reply); err != nil || reply.SID == "" || reply.PID == "" {
		c.t.Fatalf("CONNECT reply %q", m)
	}
	return reply.PID
}

func TestRecoveryRefused(t *testing.T) {
	s := startServer(t, Config{})
	alice, bob := uuid(0x61), uuid(0x62)
	tokA, tokB := s.token(t, alice, time.Hour), s.token(t, bob, time.Hour)

	c := dialRaw(t, s.url, map[string]any{"token": tokB})
	bobPID := c.connected()
	c = dialRaw(t, s.url, map[string]any{"token": tokA})
	alicePID := c.connected()
	_ = c.ws.CloseNow()
	s.waitSockets(t, 1)

	forged := []byte(alicePID)
	forged[len(forged)/2] ^= 2
	foreignKey := encodePID(derivePIDKey([]byte("a different JWT secret of 32+ bytes")),
		pid{instance: s.g.instance, userID: alice})
	tests := []struct {
		name      string
		pid       string
		offset    any
		recovered bool
	}{
		{"own pid", alicePID, nil, true},
		{"own pid and an offset", alicePID, schema.Offset{LSN: 1}.String(), true},
		{"own pid and a malformed offset", alicePID, "yesterday", true},
		{"own pid and a non-string offset", alicePID, 42, true},
		{"another user's pid", bobPID, nil, false},
		{"tampered pid", string(forged), nil, false},
		{"pid signed with another key", foreignKey, nil, false},
		{"garbage", "not a pid", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, s.url, map[string]any{"token": tokA, "pid": tt.pid, "offset": tt.offset})
			got := c.connected()
			if (got == tt.pid) != tt.recovered {
				t.Fatalf("pid %q back for %q: recovered %v, want %v", got, tt.pid, got == tt.pid, tt.recovered)
			}
			_ = c.ws.CloseNow()
			s.waitSockets(t, 1)
		})
	}
}

// sessionGone connects a socket of user and closes it, as a client that
// drops off: the token and the pid it would reconnect with.
func (s *testServer) sessionGone(t *testing.T, user string) (tok, pid string) {
	t.Helper()
	tok = s.token(t, user, time.Hour)
	c := dialRaw(t, s.url, map[string]any{"token": tok})
	pid = c.connected()
	_ = c.ws.CloseNow()
	s.waitSockets(t, 0)
	return tok, pid
}

func TestRecoveryAcrossReset(t *testing.T) {
	s := startServer(t, Config{})
	user := uuid(0x63)
	tok, p := s.sessionGone(t, user)
	s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "e", Data: json.RawMessage(`1`)})
	s.g.Reset("slot_recreated", nil)

	c := dialRaw(t, s.url, map[string]any{"token": tok, "pid": p})
	fresh := c.connected()
	if fresh == p {
		t.Fatal("recovered across a sync:reset gap")
	}
	if m, err := c.read(); err != nil || m != `42["sync:reset",{"reason":"replay_unavailable"},"0000000000000100-00000001"]` {
		t.Fatalf("after connect: %q, %v", m, err)
	}
	_ = c.ws.CloseNow()
	s.waitSockets(t, 0)

	// The offset sync:reset carried is a position after the gap: a client
	// that comes back with it recovers and is not told again.
	c = dialRaw(t, s.url, map[string]any{"token": tok, "pid": fresh, "offset": "0000000000000100-00000001"})
	if got := c.connected(); got != fresh {
		t.Fatal("a client that was told of the gap did not recover from the reset's offset")
	}
	s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "after", Data: json.RawMessage(`2`)})
	if m, err := c.read(); err != nil || !strings.HasPrefix(m, `42["after"`) {
		t.Fatalf("after recovery: %q, %v (want the next event, no second sync:reset)", m, err)
	}
}

// TestRecoveryMissTellsToRefetch: a reconnect with a pid that cannot be
// recovered — its position evicted from the window, or a pid this process
// cannot read (as after a restart whose key was its own) — connects fresh
// and gets sync:reset {replay_unavailable}: it may have missed events, and
// a client that does not look at socket.recovered must refetch too.
func TestRecoveryMissTellsToRefetch(t *testing.T) {
	s := startServer(t, Config{ReplayMaxEvents: 2})
	user := uuid(0x64)
	tok, p := s.sessionGone(t, user)
	for i := range 3 { // one more than the window keeps
		s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "e", Data: json.RawMessage(strconv.Itoa(i))})
	}
	for _, tc := range []struct{ name, pid string }{
		{"position evicted", p},
		{"unreadable pid", "not-a-pid-of-this-process"},
	} {
		c := dialRaw(t, s.url, map[string]any{"token": tok, "pid": tc.pid})
		if c.connected() == tc.pid {
			t.Fatalf("%s: recovered", tc.name)
		}
		if m, err := c.read(); err != nil || !strings.HasPrefix(m, `42["sync:reset",{"reason":"replay_unavailable"}`) {
			t.Fatalf("%s: after connect: %q, %v", tc.name, m, err)
		}
		_ = c.ws.CloseNow()
		s.waitSockets(t, 0)
	}
	// A fresh connect, with no pid, has nothing to refetch.
	c := dialRaw(t, s.url, map[string]any{"token": tok})
	c.connected()
	s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "after", Data: json.RawMessage(`9`)})
	if m, err := c.read(); err != nil || !strings.HasPrefix(m, `42["after"`) {
		t.Fatalf("fresh connect: %q, %v (want the next event, no sync:reset)", m, err)
	}
}

// TestSlowConsumerCatchesUp: a socket that stops reading is not cut when its
// queue fills: Publish never waits for it, the others keep receiving, and
// when it reads again it gets every event, once, in order, from the window
// at its own pace, then live events after them.
func TestSlowConsumerCatchesUp(t *testing.T) {
	cfg := Config{}
	cfg.SendQueue = 8
	s := startServer(t, cfg)
	slowUser, fastUser, cal := uuid(0x81), uuid(0x82), uuid(0x83)
	s.setMembers(slowUser, cal)
	s.setMembers(fastUser, cal)
	slow := dialRaw(t, s.url, map[string]any{"token": s.token(t, slowUser, time.Hour)})
	slow.ws.SetReadLimit(1 << 20)
	slow.connected()
	fast := newMemberConn(s, fastUser, cal)
	s.waitSockets(t, 2)

	big := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`)
	const n = 400 // 25 MiB: more than any socket buffer holds
	var offs []string
	for range n {
		offs = append(offs, s.publish(t, schema.Envelope{Room: schema.CalendarRoom(cal), Event: "big", Data: big})...)
	}
	if got := len(fast.got()); got != n {
		t.Fatalf("the other socket got %d of %d", got, n)
	}
	if s.g.Sockets() != 2 || testutilValue(s.g.metrics.slowDisconnects) != 0 {
		t.Fatalf("the slow socket was cut: %d sockets", s.g.Sockets())
	}
	offs = append(offs, s.publish(t, schema.Envelope{Room: schema.CalendarRoom(cal), Event: "live", Data: json.RawMessage(`1`)})...)
	for i, want := range offs {
		m, err := slow.read()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if !strings.HasSuffix(m, `"`+want+`"]`) {
			t.Fatalf("event %d: %.80q…, want offset %s", i, m, want)
		}
	}
}

// newMemberConn attaches an in-memory socket next to the real ones.
func newMemberConn(s *testServer, user, cal string) *memConn {
	c := &memConn{}
	attach(s.g, user, c, schema.UserRoom(user), schema.CalendarRoom(cal))
	return c
}

// TestRecoveryRoomsAsOfEachEvent: a recovering socket is replayed each event
// only if its user was in the event's room when it was published: a
// calendar joined while away is replayed from the join on, one left while
// away up to the leave, one deleted up to its calendar:deleted.
func TestRecoveryRoomsAsOfEachEvent(t *testing.T) {
	s := startServer(t, Config{})
	user := uuid(0x71)
	left, joined, deleted := uuid(0x72), uuid(0x73), uuid(0x74)
	s.setMembers(user, left, deleted)
	tok := s.token(t, user, time.Hour)
	c := dialRaw(t, s.url, map[string]any{"token": tok})
	p := c.connected()
	s.waitSockets(t, 1)
	_ = c.ws.CloseNow()
	s.waitSockets(t, 0)

	ev := func(cal, name string) schema.Envelope {
		return schema.Envelope{Room: schema.CalendarRoom(cal), Event: name, Data: json.RawMessage(`{}`)}
	}
	s.publish(t, ev(joined, "before-join"), ev(left, "before-leave"))
	s.publishTx(t, []schema.Envelope{ev(joined, schema.MemberAdded), ev(joined, "after-join")},
		[]schema.Move{{At: 0, Op: schema.MoveJoin, User: user, Room: schema.CalendarRoom(joined)}})
	s.publishTx(t, []schema.Envelope{ev(left, schema.MemberRemoved), ev(left, "after-leave")},
		[]schema.Move{{At: 0, Op: schema.MoveLeave, User: user, Room: schema.CalendarRoom(left)}})
	s.publishTx(t, []schema.Envelope{ev(deleted, schema.CalendarDeleted), ev(deleted, "after-delete")},
		[]schema.Move{{At: 1, Op: schema.MoveClose, Room: schema.CalendarRoom(deleted)}})
	s.publish(t, ev(joined, "live"))

	c = dialRaw(t, s.url, map[string]any{"token": tok, "pid": p})
	if c.connected() != p {
		t.Fatal("not recovered")
	}
	for _, want := range []string{"before-leave", schema.MemberAdded, "after-join", schema.CalendarDeleted, "live"} {
		m, err := c.read()
		if err != nil || !strings.HasPrefix(m, `42["`+want+`"`) {
			t.Fatalf("got %q, %v; want %s", m, err, want)
		}
	}
	s.publish(t, ev(left, "not-a-member"), ev(joined, "next"))
	if m, err := c.read(); err != nil || !strings.HasPrefix(m, `42["next"`) {
		t.Fatalf("after the replay: %q, %v", m, err)
	}
}

// TestLongRecoveryPaced: a recovery replaying far more than the socket's
// queue holds is recovered, not refused: the replay goes at the pace the
// socket drains, every event once and in order, then live events.
func TestLongRecoveryPaced(t *testing.T) {
	cfg := Config{}
	cfg.SendQueue = 8
	s := startServer(t, cfg)
	user, cal := uuid(0x75), uuid(0x76)
	s.setMembers(user, cal)
	tok := s.token(t, user, time.Hour)
	c := dialRaw(t, s.url, map[string]any{"token": tok})
	p := c.connected()
	s.waitSockets(t, 1)
	_ = c.ws.CloseNow()
	s.waitSockets(t, 0)
	var offs []string
	for i := range 500 {
		offs = append(offs, s.publish(t, schema.Envelope{Room: schema.CalendarRoom(cal), Event: "e", Data: json.RawMessage(fmt.Sprint(i))})...)
	}
	c = dialRaw(t, s.url, map[string]any{"token": tok, "pid": p})
	if c.connected() != p {
		t.Fatal("not recovered")
	}
	offs = append(offs, s.publish(t, schema.Envelope{Room: schema.CalendarRoom(cal), Event: "e", Data: json.RawMessage(`"live"`)})...)
	for i, want := range offs {
		m, err := c.read()
		if err != nil || !strings.HasPrefix(m, `42["e"`) || !strings.HasSuffix(m, `"`+want+`"]`) {
			t.Fatalf("event %d: %q, %v; want offset %s", i, m, err, want)
		}
	}
}
