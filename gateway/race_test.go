package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

// hookMemberships runs hooks inside the membership calls, to land stream
// changes exactly between a query and the join it decides.
type hookMemberships struct {
	staticMemberships
	mu      sync.Mutex
	onQuery func()
	onCheck func() bool // result of IsAcceptedMember
}

func (h *hookMemberships) AcceptedCalendars(ctx context.Context, user string) ([]string, error) {
	h.mu.Lock()
	f := h.onQuery
	h.onQuery = nil
	h.mu.Unlock()
	ids, err := h.staticMemberships.AcceptedCalendars(ctx, user)
	if f != nil {
		f()
	}
	return ids, err
}

func (h *hookMemberships) IsAcceptedMember(_ context.Context, _, _ string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.onCheck(), nil
}

// hook installs the hooks (nil leaves one unset).
func (h *hookMemberships) hook(onQuery func(), onCheck func() bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if onQuery != nil {
		h.onQuery = onQuery
	}
	if onCheck != nil {
		h.onCheck = onCheck
	}
}

func startHookServer(t *testing.T, cfg Config, ms *hookMemberships) *testServer {
	t.Helper()
	cfg.Memberships = ms
	s := startServer(t, cfg)
	s.ms = &ms.staticMemberships
	return s
}

// TestRoomChangesDuringConnect: join and leave moves published while a
// socket's membership query runs are applied after the query's result.
func TestRoomChangesDuringConnect(t *testing.T) {
	ms := &hookMemberships{}
	user, kept, removed, added := uuid(0x91), uuid(0x92), uuid(0x93), uuid(0x94)
	ms.set(user, kept, removed)
	s := startHookServer(t, Config{}, ms)
	ms.hook(func() {
		s.move(t, schema.Move{Op: schema.MoveLeave, User: user, Room: schema.CalendarRoom(removed)},
			schema.Move{Op: schema.MoveJoin, User: user, Room: schema.CalendarRoom(added)})
	}, nil)
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	for _, cal := range []string{removed, added, kept} {
		s.publish(t, schema.Envelope{Room: schema.CalendarRoom(cal), Event: "e", Data: json.RawMessage(`"` + cal + `"`)})
	}
	for _, want := range []string{added, kept} {
		m, err := c.read()
		if err != nil || !strings.Contains(m, want) {
			t.Fatalf("got %q, %v; want the event of %s", m, err, want)
		}
	}
}

// TestJoinRacesRemoval: a membership removal that lands between the
// join:calendar check and the join wins.
func TestJoinRacesRemoval(t *testing.T) {
	ms := &hookMemberships{}
	user, cal := uuid(0xA1), uuid(0xA2)
	s := startHookServer(t, Config{}, ms)
	removedOnce := false
	ms.hook(nil, func() bool {
		if !removedOnce {
			removedOnce = true
			// The stream removes the membership while the check runs.
			s.move(t, schema.Move{Op: schema.MoveLeave, User: user, Room: schema.CalendarRoom(cal)})
			return true
		}
		return false
	})
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	if err := c.ws.Write(context.Background(), 1, []byte(`421["join:calendar","`+cal+`"]`)); err != nil {
		t.Fatal(err)
	}
	m, err := c.read()
	if err != nil || !strings.HasPrefix(m, `431[{"ok":false,"error_code":"FORBIDDEN"`) {
		t.Fatalf("ack %q, %v", m, err)
	}
}

// TestJoinKeepsRacingRemovals: when room removals keep landing during the
// membership check, join:calendar gives up after three checks with a
// refusal the client can retry, rather than joining unchecked.
func TestJoinKeepsRacingRemovals(t *testing.T) {
	ms := &hookMemberships{}
	user, cal, other := uuid(0xA3), uuid(0xA4), uuid(0xA5)
	s := startHookServer(t, Config{}, ms)
	checks := 0
	ms.hook(nil, func() bool {
		checks++
		s.move(t, schema.Move{Op: schema.MoveLeave, User: user, Room: schema.CalendarRoom(other)}) // a removal lands each time
		return true
	})
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	if err := c.ws.Write(context.Background(), 1, []byte(`421["join:calendar","`+cal+`"]`)); err != nil {
		t.Fatal(err)
	}
	m, err := c.read()
	if err != nil || !strings.HasPrefix(m, `431[{"ok":false,"error_code":"INTERNAL_ERROR"`) {
		t.Fatalf("ack %q, %v", m, err)
	}
	if checks != 3 {
		t.Errorf("%d membership checks, want 3", checks)
	}
}

// TestRateLimitRaw is TestClientRateLimit without Node: the bucket, the
// refusal and the disconnect after persistent abuse.
func TestRateLimitRaw(t *testing.T) {
	s := startServer(t, Config{RateLimit: 3, AbuseLimit: 4})
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, uuid(0xB1), time.Hour)})
	c.connected()
	for i := range 3 + 4 {
		if err := c.ws.Write(context.Background(), 1, []byte(`42["ping:me"]`)); err != nil {
			t.Fatal(err)
		}
		m, err := c.read()
		want := `42["error",{"error_code":"UNKNOWN_EVENT"`
		if i >= 3 {
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
