package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

// TestClientRecoveryAcrossRestart: a session begun in one process resumes in
// its successor, which never saw it, because the pid carries the user and
// position, signed with the shared secret.
func TestClientRecoveryAcrossRestart(t *testing.T) {
	user, cal := uuid(0x21), uuid(0x22)
	newGateway := func() *Gateway {
		g, err := New(Config{JWTSecret: testSecret, ReplayWindow: testReplayWindow})
		if err != nil {
			t.Fatal(err)
		}
		g.LoadMemberships(members(map[string][]string{user: {cal}}))
		t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
		return g
	}
	var current atomic.Pointer[Gateway]
	current.Store(newGateway())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s := &testServer{g: current.Load(), url: srv.URL}
	d := startDriver(t, srv.URL)

	room := schema.CalendarRoom(cal)
	ev := func(n string) schema.Envelope {
		return schema.Envelope{Room: room, Event: schema.EventUpdated, Data: json.RawMessage(`{"n":` + n + `}`)}
	}
	d.connect("c", s.token(t, user, time.Hour), map[string]any{"transports": []string{"websocket"}, "reconnectionDelay": 300})
	d.next("c", "connect")
	s.waitSockets(t, 1)
	first := s.publish(t, ev("1"))
	expectEvent(t, d, "c", schema.EventUpdated, `{"n":1}`, first[0])

	// The process goes away; its successor resumes the stream from the
	// slot, which trails, so it publishes event 1 again, then the two the
	// client missed.
	old := current.Load()
	next := newGateway()
	next.ResumeAfter(schema.Offset{LSN: 1})
	current.Store(next)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s.g = next
	s.lsn = 0
	s.publish(t, ev("1"))
	second := s.publish(t, ev("2"))
	third := s.publish(t, ev("3"))

	c := d.next("c", "connect")
	if !c.Recovered {
		t.Fatal("not recovered by the successor process")
	}
	expectEvent(t, d, "c", schema.EventUpdated, `{"n":2}`, second[0])
	expectEvent(t, d, "c", schema.EventUpdated, `{"n":3}`, third[0])
	live := s.publish(t, ev("4"))
	expectEvent(t, d, "c", schema.EventUpdated, `{"n":4}`, live[0])
}
