package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// betweenConnect wraps the gateway's handler to run a hook after Connect has
// answered and before Connected, where stream changes can land while the
// client already holds its CONNECT reply.
type betweenConnect struct {
	*handler
	hook func()
}

func (b betweenConnect) Connected(s *socketio.Socket) {
	b.hook()
	b.handler.Connected(s)
}

// TestRoomChangesDuringConnect: moves and events published between a
// socket's CONNECT and its going live reach it as if it had been live: the
// events of rooms its user was in when each was published, in order.
func TestRoomChangesDuringConnect(t *testing.T) {
	user, kept, removed, added := uuid(0x91), uuid(0x92), uuid(0x93), uuid(0x94)
	s := startServer(t, Config{})
	s.setMembers(user, kept, removed)
	ev := func(cal, n string) schema.Envelope {
		return schema.Envelope{Room: schema.CalendarRoom(cal), Event: "e", Data: json.RawMessage(`"` + cal + n + `"`)}
	}
	hooked := make(chan struct{})
	s.g.server.Handle(Namespace, betweenConnect{(*handler)(s.g), func() {
		defer close(hooked)
		s.publish(t, ev(removed, "-1")) // still a member: gets it
		s.move(t, schema.Move{Op: schema.MoveLeave, User: user, Room: schema.CalendarRoom(removed)},
			schema.Move{Op: schema.MoveJoin, User: user, Room: schema.CalendarRoom(added)})
		s.publish(t, ev(removed, "-2"), ev(added, "-2")) // left one, joined the other
	}})
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	<-hooked
	s.waitSockets(t, 1)
	for _, cal := range []string{removed, added, kept} {
		s.publish(t, ev(cal, "-3"))
	}
	for _, want := range []string{removed + "-1", added + "-2", added + "-3", kept + "-3"} {
		m, err := c.read()
		if err != nil || !strings.Contains(m, want) {
			t.Fatalf("got %q, %v; want the event %s", m, err, want)
		}
	}
}

// TestJoinCheckedAgainstMoves: join:calendar is checked against the
// memberships the published moves left, under the lock the moves take: a
// removal published just before it wins, a membership added just before it
// is accepted.
func TestJoinCheckedAgainstMoves(t *testing.T) {
	user, cal := uuid(0xA1), uuid(0xA2)
	s := startServer(t, Config{})
	s.setMembers(user, cal)
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	join := func(id int) string {
		t.Helper()
		if err := c.ws.Write(context.Background(), 1, []byte(`42`+fmt.Sprint(id)+`["join:calendar","`+cal+`"]`)); err != nil {
			t.Fatal(err)
		}
		m, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	s.move(t, schema.Move{Op: schema.MoveLeave, User: user, Room: schema.CalendarRoom(cal)})
	if m := join(1); !strings.HasPrefix(m, `431[{"ok":false,"error_code":"FORBIDDEN"`) {
		t.Fatalf("join after the removal: %q", m)
	}
	s.move(t, schema.Move{Op: schema.MoveJoin, User: user, Room: schema.CalendarRoom(cal)})
	if m := join(2); !strings.HasPrefix(m, `432[{"ok":true`) {
		t.Fatalf("join after the membership came back: %q", m)
	}
}

// TestRateLimitRaw is TestClientRateLimit without Node: the bucket, the
// refusal and the disconnect after persistent abuse.
func TestRateLimitRaw(t *testing.T) {
	s := startServer(t, Config{RateLimit: 3, AbuseLimit: 4})
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, uuid(0xB1), time.Hour)})
	c.connected()
	// Two events pass: the CONNECT took the bucket's third token.
	for i := range 2 + 4 {
		if err := c.ws.Write(context.Background(), 1, []byte(`42["ping:me"]`)); err != nil {
			t.Fatal(err)
		}
		m, err := c.read()
		want := `42["error",{"error_code":"UNKNOWN_EVENT"`
		if i >= 2 {
			want = `42["error",{"error_code":"RATE_LIMITED"`
		}
		if err != nil || !strings.HasPrefix(m, want) {
			t.Fatalf("event %d: %q, %v; want %s…", i, m, err, want)
		}
	}
	if m, err := c.read(); err != nil || m != "41" {
		t.Fatalf("after abuse: %q, %v; want a namespace DISCONNECT", m, err)
	}
	if got := testutilValue(s.g.metrics.rateLimited); got != 4 {
		t.Fatalf("rate limited = %v", got)
	}
}

// TestRateLimitOff: a negative RateLimit lets every event through.
func TestRateLimitOff(t *testing.T) {
	// 0 is what RATE_LIMIT=0 passes through unchanged: no limit, as a
	// negative value.
	for _, limit := range []int{0, -1} {
		s := startServer(t, Config{RateLimit: limit, AbuseLimit: 2})
		c := dialRaw(t, s.url, map[string]any{"token": s.token(t, uuid(0xB2), time.Hour)})
		c.connected()
		for i := range 150 {
			if err := c.ws.Write(context.Background(), 1, []byte(`42["ping:me"]`)); err != nil {
				t.Fatal(err)
			}
			m, err := c.read()
			if err != nil || !strings.HasPrefix(m, `42["error",{"error_code":"UNKNOWN_EVENT"`) {
				t.Fatalf("limit %d, event %d: %q, %v", limit, i, m, err)
			}
		}
	}
}
