package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/schema"
)

// These tests drive the real socket.io-client (testdata/client/driver.mjs,
// installed by `make node-deps`) against a Gateway on an httptest server.

// report is one line the driver writes.
type report struct {
	ID        string            `json:"id"`
	Ev        string            `json:"ev"`
	Sid       string            `json:"sid"`
	Recovered bool              `json:"recovered"`
	Transport string            `json:"transport"`
	Message   string            `json:"message"`
	Reason    string            `json:"reason"`
	Event     string            `json:"event"`
	Seq       int               `json:"seq"`
	Error     string            `json:"error"`
	Args      []json.RawMessage `json:"args"`
}

type driver struct {
	t      *testing.T
	stdin  io.WriteCloser
	stderr *bytes.Buffer

	mu      sync.Mutex
	reports []report
	taken   []bool
	arrived chan struct{} // signalled on every new report
	eof     bool
}

const waitFor = 15 * time.Second

// startDriver runs the Node driver against url. Without node or the
// installed client it skips, except under CI where it fails.
func startDriver(t *testing.T, url string) *driver {
	t.Helper()
	dir := filepath.Join("..", "testdata")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "socket.io-client", "package.json"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node or socket.io-client missing (run make node-deps): %v", err)
		}
		t.Skipf("node or socket.io-client missing (run make node-deps): %v", err)
	}
	cmd := exec.Command(node, filepath.Join("client", "driver.mjs"), url)
	cmd.Dir = dir
	d := &driver{t: t, stderr: &bytes.Buffer{}, arrived: make(chan struct{}, 1)}
	cmd.Stderr = d.stderr
	d.stdin, err = cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r report
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = report{Ev: "fatal", Message: "bad line: " + sc.Text()}
			}
			d.mu.Lock()
			d.reports = append(d.reports, r)
			d.taken = append(d.taken, false)
			d.mu.Unlock()
			d.signal()
		}
		d.mu.Lock()
		d.eof = true
		d.mu.Unlock()
		d.signal()
	}()
	t.Cleanup(func() {
		d.send(map[string]any{"op": "exit"})
		_ = d.stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("driver stderr:\n%s", d.stderr)
			d.mu.Lock()
			for _, r := range d.reports {
				b, _ := json.Marshal(r)
				t.Logf("report: %s", b)
			}
			d.mu.Unlock()
		}
	})
	d.next("", "ready")
	return d
}

func (d *driver) signal() {
	select {
	case d.arrived <- struct{}{}:
	default:
	}
}

func (d *driver) send(cmd map[string]any) {
	b, _ := json.Marshal(cmd)
	_, _ = d.stdin.Write(append(b, '\n'))
}

// take returns the first report not yet taken that satisfies match, waiting
// for it; a fatal report fails the test.
func (d *driver) take(what string, match func(report) bool) report {
	d.t.Helper()
	deadline := time.After(waitFor)
	for {
		d.mu.Lock()
		for i, r := range d.reports {
			if r.Ev == "fatal" {
				d.mu.Unlock()
				d.t.Fatalf("driver: %s", r.Message)
			}
			if !d.taken[i] && match(r) {
				d.taken[i] = true
				d.mu.Unlock()
				return r
			}
		}
		eof := d.eof
		d.mu.Unlock()
		if eof {
			d.t.Fatalf("driver exited while waiting for %s", what)
		}
		select {
		case <-d.arrived:
		case <-deadline:
			d.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// next waits for the next report of kind ev for socket id.
func (d *driver) next(id, ev string) report {
	d.t.Helper()
	return d.take(id+" "+ev, func(r report) bool { return r.ID == id && r.Ev == ev })
}

// nextEvent waits for the next server event of socket id (any name).
func (d *driver) nextEvent(id string) report {
	d.t.Helper()
	return d.next(id, "event")
}

func (d *driver) connect(id, token string, opts map[string]any) {
	cmd := map[string]any{"op": "connect", "id": id, "token": token}
	for k, v := range opts {
		cmd[k] = v
	}
	d.send(cmd)
}

var seq int

// emitAck emits with an ack and returns the ack's first argument.
func (d *driver) emitAck(id, event string, args ...any) map[string]any {
	d.t.Helper()
	seq++
	s := seq
	if args == nil {
		args = []any{}
	}
	d.send(map[string]any{"op": "emit", "id": id, "event": event, "args": args, "ack": true, "seq": s})
	r := d.take(fmt.Sprintf("%s ack %d", id, s), func(r report) bool { return r.ID == id && r.Ev == "ack" && r.Seq == s })
	if r.Error != "" || len(r.Args) == 0 {
		d.t.Fatalf("ack of %s: error %q, args %s", event, r.Error, r.Args)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Args[0], &m); err != nil {
		d.t.Fatalf("ack of %s: %s", event, r.Args[0])
	}
	return m
}

func (d *driver) emit(id, event string, args ...any) {
	if args == nil {
		args = []any{}
	}
	d.send(map[string]any{"op": "emit", "id": id, "event": event, "args": args})
}

// testServer is a Gateway on an httptest server with static memberships.
type testServer struct {
	g   *Gateway
	url string

	mu      sync.Mutex
	lsn     uint64
	members map[string][]string
}

func startServer(t *testing.T, cfg Config) *testServer {
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
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
		srv.Close()
	})
	return &testServer{g: g, url: srv.URL, members: map[string][]string{}}
}

// setMembers makes user an accepted member of exactly cals, as a new
// membership snapshot loaded into the gateway (every socket's rooms follow).
func (s *testServer) setMembers(user string, cals ...string) {
	s.mu.Lock()
	s.members[user] = cals
	snap := members(s.members)
	s.mu.Unlock()
	s.g.LoadMemberships(snap)
}

func (s *testServer) token(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint(testSecret, user, user+"@example.com", time.Now(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// publish commits one transaction of events (room, event name, payload n).
func (s *testServer) publish(t *testing.T, evs ...schema.Envelope) []string {
	t.Helper()
	return s.publishTx(t, evs, nil)
}

// move commits a transaction that only moves sockets, as derivation attaches
// to a membership change (the events themselves do not matter here).
func (s *testServer) move(t *testing.T, moves ...schema.Move) {
	t.Helper()
	s.publishTx(t, nil, moves)
}

// publishTx commits one transaction at the next position; it may be called
// from a membership hook on the gateway's connect path.
func (s *testServer) publishTx(t *testing.T, evs []schema.Envelope, moves []schema.Move) []string {
	t.Helper()
	s.mu.Lock()
	s.lsn += 0x100
	lsn := s.lsn
	s.mu.Unlock()
	var offs []string
	for i := range evs {
		evs[i].Offset = schema.Offset{LSN: lsn, Index: uint32(i)}
		offs = append(offs, evs[i].Offset.String())
	}
	if err := s.g.Publish(context.Background(), schema.Transaction{CommitLSN: lsn, CommitTime: time.Now(), Events: evs, Moves: moves}); err != nil {
		t.Fatal(err)
	}
	return offs
}

// waitSockets waits until the gateway holds n sockets.
func (s *testServer) waitSockets(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for s.g.Sockets() != n {
		if time.Now().After(deadline) {
			t.Fatalf("gateway holds %d sockets, want %d", s.g.Sockets(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func argString(t *testing.T, r report, i int) string {
	t.Helper()
	var s string
	if i >= len(r.Args) || json.Unmarshal(r.Args[i], &s) != nil {
		t.Fatalf("%s: argument %d is not a string: %s", r.Event, i, r.Args)
	}
	return s
}

// expectEvent takes id's next event and checks its name, payload and offset.
func expectEvent(t *testing.T, d *driver, id, event, payload, offset string) {
	t.Helper()
	r := d.nextEvent(id)
	if r.Event != event || len(r.Args) != 2 || string(r.Args[0]) != payload || argString(t, r, 1) != offset {
		t.Fatalf("%s got %s %s, want %s [%s %q]", id, r.Event, r.Args, event, payload, offset)
	}
}

func TestClientTransports(t *testing.T) {
	// Registered first, so it runs after the server and driver are closed.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	s := startServer(t, Config{})
	d := startDriver(t, s.url)
	user := uuid(1)
	cal := uuid(0xC1)
	s.setMembers(user, cal)
	tok := s.token(t, user, time.Hour)
	tests := []struct {
		id         string
		transports []string
		first      string
		upgrade    bool
	}{
		{"koordi", []string{"websocket", "polling"}, "websocket", false},
		{"polling", []string{"polling"}, "polling", false},
		{"default", []string{"polling", "websocket"}, "polling", true},
	}
	for _, tt := range tests {
		d.connect(tt.id, tok, map[string]any{"transports": tt.transports})
		c := d.next(tt.id, "connect")
		// The upgrade may finish before the CONNECT reply is read.
		if (c.Transport != tt.first && !tt.upgrade) || c.Recovered || c.Sid == "" {
			t.Fatalf("%s connected %+v, want transport %s", tt.id, c, tt.first)
		}
		if tt.upgrade {
			if u := d.next(tt.id, "upgrade"); u.Transport != "websocket" {
				t.Fatalf("%s upgraded to %s", tt.id, u.Transport)
			}
		}
	}
	s.waitSockets(t, 3)
	offs := s.publish(t,
		schema.Envelope{Room: schema.CalendarRoom(cal), Event: schema.EventCreated, Data: json.RawMessage(`{"event_id":"e1"}`)},
		schema.Envelope{Room: schema.UserRoom(user), Event: schema.InvitationReceived, Data: json.RawMessage(`{"calendar_id":"c2"}`)},
	)
	for _, tt := range tests {
		expectEvent(t, d, tt.id, schema.EventCreated, `{"event_id":"e1"}`, offs[0])
		expectEvent(t, d, tt.id, schema.InvitationReceived, `{"calendar_id":"c2"}`, offs[1])
		if ack := d.emitAck(tt.id, EventLeaveCalendar, cal); ack["ok"] != true || ack["room"] != schema.CalendarRoom(cal) {
			t.Fatalf("%s leave ack %v", tt.id, ack)
		}
	}
	for _, tt := range tests {
		d.send(map[string]any{"op": "disconnect", "id": tt.id})
	}
	s.waitSockets(t, 0)
}

func TestClientAuthFailures(t *testing.T) {
	s := startServer(t, Config{})
	d := startDriver(t, s.url)
	user := uuid(2)
	expired, err := auth.Mint(testSecret, user, "", time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.Mint([]byte("not the server's secret, 32 bytes+"), user, "", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id, token, want string
	}{
		{"none", "", "Authentication error: token required"},
		{"garbage", "abc.def.ghi", "Authentication error: invalid token"},
		{"forged", forged, "Authentication error: invalid token"},
		{"expired", expired, "Authentication error: token expired"},
	}
	for _, tt := range tests {
		d.connect(tt.id, tt.token, map[string]any{"transports": []string{"websocket", "polling"}})
		if r := d.next(tt.id, "connect_error"); r.Message != tt.want {
			t.Errorf("%s: connect_error %q, want %q", tt.id, r.Message, tt.want)
		}
	}
	if got := s.g.metrics.authFailures.WithLabelValues("invalid_token"); got == nil {
		t.Fatal("no metric")
	}
}

func TestClientRooms(t *testing.T) {
	s := startServer(t, Config{})
	d := startDriver(t, s.url)
	alice, bob := uuid(0xA1), uuid(0xB0)
	calA, calB := uuid(0xCA), uuid(0xCB)
	s.setMembers(alice, calA)
	s.setMembers(bob, calB)
	d.connect("alice", s.token(t, alice, time.Hour), nil)
	d.connect("bob", s.token(t, bob, time.Hour), map[string]any{"transports": []string{"websocket"}})
	d.next("alice", "connect")
	d.next("bob", "connect")
	s.waitSockets(t, 2)

	// A calendar event reaches its members only. The marker sent to both
	// user rooms afterwards proves bob got nothing before it.
	marker := func() []string {
		return s.publish(t,
			schema.Envelope{Room: schema.UserRoom(alice), Event: "marker", Data: json.RawMessage(`1`)},
			schema.Envelope{Room: schema.UserRoom(bob), Event: "marker", Data: json.RawMessage(`1`)})
	}
	offA := s.publish(t, schema.Envelope{Room: schema.CalendarRoom(calA), Event: schema.EventUpdated, Data: json.RawMessage(`{"n":1}`)})
	m := marker()
	expectEvent(t, d, "alice", schema.EventUpdated, `{"n":1}`, offA[0])
	expectEvent(t, d, "alice", "marker", `1`, m[0])
	expectEvent(t, d, "bob", "marker", `1`, m[1])

	// Refusals: through the ack when asked, else as an error event.
	refusals := []struct {
		event string
		arg   any
		code  string
	}{
		{EventJoinCalendar, calA, CodeForbidden},
		{EventJoinCalendar, "not-a-uuid", CodeInvalidCalendarID},
		{EventJoinCalendar, "00000000-0000-0000-0000-000000-00000", CodeInvalidCalendarID}, // once a panic in ParseUUID
		{EventJoinCalendar, 42, CodeInvalidCalendarID},
		{EventLeaveCalendar, "", CodeInvalidCalendarID},
		{"calendar:subscribe", calA, CodeUnknownEvent},
	}
	for _, rf := range refusals {
		ack := d.emitAck("bob", rf.event, rf.arg)
		if ack["ok"] != false || ack["error_code"] != rf.code || ack["message"] == "" {
			t.Errorf("%s(%v) ack %v, want %s", rf.event, rf.arg, ack, rf.code)
		}
		d.emit("bob", rf.event, rf.arg)
		r := d.nextEvent("bob")
		var body map[string]string
		if r.Event != EventError || len(r.Args) != 1 || json.Unmarshal(r.Args[0], &body) != nil ||
			body["error_code"] != rf.code || body["message"] == "" {
			t.Errorf("%s(%v) without ack: %s %s, want error %s", rf.event, rf.arg, r.Event, r.Args, rf.code)
		}
	}

	// Once bob is a member, join:calendar is accepted and events follow;
	// after leave:calendar they stop.
	s.setMembers(bob, calB, calA)
	if ack := d.emitAck("bob", EventJoinCalendar, calA); ack["ok"] != true {
		t.Fatalf("join ack %v", ack)
	}
	offA = s.publish(t, schema.Envelope{Room: schema.CalendarRoom(calA), Event: schema.EventUpdated, Data: json.RawMessage(`{"n":2}`)})
	expectEvent(t, d, "bob", schema.EventUpdated, `{"n":2}`, offA[0])
	expectEvent(t, d, "alice", schema.EventUpdated, `{"n":2}`, offA[0])
	if ack := d.emitAck("bob", EventLeaveCalendar, calA); ack["ok"] != true {
		t.Fatalf("leave ack %v", ack)
	}
	off3 := s.publish(t, schema.Envelope{Room: schema.CalendarRoom(calA), Event: schema.EventUpdated, Data: json.RawMessage(`{"n":3}`)})
	m = marker()
	expectEvent(t, d, "bob", "marker", `1`, m[1])

	// A transaction's join move reaches every live socket of a user.
	s.move(t, schema.Move{Op: schema.MoveJoin, User: alice, Room: schema.CalendarRoom(calB)})
	offB := s.publish(t, schema.Envelope{Room: schema.CalendarRoom(calB), Event: schema.CalendarSynced, Data: json.RawMessage(`{}`)})
	expectEvent(t, d, "alice", schema.EventUpdated, `{"n":3}`, off3[0])
	expectEvent(t, d, "alice", "marker", `1`, m[0])
	expectEvent(t, d, "alice", schema.CalendarSynced, `{}`, offB[0])
	expectEvent(t, d, "bob", schema.CalendarSynced, `{}`, offB[0])
}

func TestClientRateLimit(t *testing.T) {
	s := startServer(t, Config{RateLimit: 5, AbuseLimit: 10})
	d := startDriver(t, s.url)
	user, cal := uuid(0xD1), uuid(0xD2)
	d.connect("spam", s.token(t, user, time.Hour), map[string]any{"transports": []string{"websocket"}, "reconnection": false})
	d.next("spam", "connect")
	// Four events pass (the bucket of five, less the CONNECT's token), the
	// next ones are refused.
	d.send(map[string]any{"op": "emit_many", "id": "spam", "event": EventLeaveCalendar, "args": []any{cal}, "n": 6})
	for range 2 {
		r := d.nextEvent("spam")
		if r.Event != EventError || !bytes.Contains(r.Args[0], []byte(CodeRateLimited)) {
			t.Fatalf("got %s %s, want RATE_LIMITED", r.Event, r.Args)
		}
	}
	if ack := d.emitAck("spam", EventLeaveCalendar, cal); ack["error_code"] != CodeRateLimited {
		t.Fatalf("ack %v, want RATE_LIMITED", ack)
	}
	// Persistent abuse: ten refusals within a minute disconnect the socket.
	d.send(map[string]any{"op": "emit_many", "id": "spam", "event": EventLeaveCalendar, "args": []any{cal}, "n": 20})
	if r := d.next("spam", "disconnect"); r.Reason != "io server disconnect" {
		t.Fatalf("disconnect reason %q", r.Reason)
	}
	s.waitSockets(t, 0)
}

func TestClientRecovery(t *testing.T) {
	s := startServer(t, Config{})
	d := startDriver(t, s.url)
	user, cal, other := uuid(0xE1), uuid(0xE2), uuid(0xE3)
	s.setMembers(user, cal)
	tok := s.token(t, user, time.Hour)
	ev := func(room, n string) schema.Envelope {
		return schema.Envelope{Room: room, Event: schema.EventAssigned, Data: json.RawMessage(`{"n":` + n + `}`)}
	}
	userRoom, calRoom, otherRoom := schema.UserRoom(user), schema.CalendarRoom(cal), schema.CalendarRoom(other)

	for _, tc := range []struct {
		id         string
		transports []string
		seenFirst  bool // the client received an event before the drop (recovers by offset, else by pid)
	}{
		{"ws-offset", []string{"websocket"}, true},
		{"ws-pid-only", []string{"websocket"}, false},
		{"polling-offset", []string{"polling"}, true},
	} {
		t.Run(tc.id, func(t *testing.T) {
			d.connect(tc.id, tok, map[string]any{"transports": tc.transports, "reconnectionDelay": 300})
			if c := d.next(tc.id, "connect"); c.Recovered {
				t.Fatal("first connect recovered")
			}
			s.waitSockets(t, 1)
			if tc.seenFirst {
				o := s.publish(t, ev(calRoom, "0"))
				expectEvent(t, d, tc.id, schema.EventAssigned, `{"n":0}`, o[0])
			}
			d.send(map[string]any{"op": "close_engine", "id": tc.id})
			if r := d.next(tc.id, "disconnect"); r.Reason != "transport close" && r.Reason != "forced close" {
				t.Logf("disconnect reason %q", r.Reason)
			}
			s.waitSockets(t, 0)
			// Missed while disconnected: two events of its rooms, one of another.
			missed := s.publish(t, ev(calRoom, "1"), ev(otherRoom, "x"), ev(userRoom, "2"))
			c := d.next(tc.id, "connect")
			if !c.Recovered {
				t.Fatal("reconnect not recovered")
			}
			live := s.publish(t, ev(calRoom, "3"))
			expectEvent(t, d, tc.id, schema.EventAssigned, `{"n":1}`, missed[0])
			expectEvent(t, d, tc.id, schema.EventAssigned, `{"n":2}`, missed[2])
			expectEvent(t, d, tc.id, schema.EventAssigned, `{"n":3}`, live[0])
			d.send(map[string]any{"op": "disconnect", "id": tc.id})
			s.waitSockets(t, 0)
		})
	}
}

func TestClientRecoveryOutsideWindow(t *testing.T) {
	s := startServer(t, Config{ReplayMaxEvents: 2})
	d := startDriver(t, s.url)
	user := uuid(0xF1)
	d.connect("late", s.token(t, user, time.Hour), map[string]any{"transports": []string{"websocket"}, "reconnectionDelay": 300})
	d.next("late", "connect")
	s.waitSockets(t, 1)
	o := s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "e", Data: json.RawMessage(`0`)})
	expectEvent(t, d, "late", "e", `0`, o[0])
	d.send(map[string]any{"op": "close_engine", "id": "late"})
	s.waitSockets(t, 0)
	for i := range 3 {
		s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "e", Data: json.RawMessage(fmt.Sprint(i + 1))})
	}
	if c := d.next("late", "connect"); c.Recovered {
		t.Fatal("recovered although an event it missed was evicted")
	}
	// Told to refetch, also a client that does not look at recovered.
	if r := d.nextEvent("late"); r.Event != schema.SyncReset || len(r.Args) != 2 || string(r.Args[0]) != `{"reason":"replay_unavailable"}` {
		t.Fatalf("after the fresh connect: %s %s, want sync:reset {replay_unavailable}", r.Event, r.Args)
	}
	o = s.publish(t, schema.Envelope{Room: schema.UserRoom(user), Event: "e", Data: json.RawMessage(`9`)})
	expectEvent(t, d, "late", "e", `9`, o[0])
	if got := testutilValue(s.g.metrics.replayMisses); got != 1 {
		t.Fatalf("replay misses = %v", got)
	}
}

func TestClientTokenExpiry(t *testing.T) {
	s := startServer(t, Config{})
	d := startDriver(t, s.url)
	user := uuid(0x11)
	// exp has a resolution of one second; 2s leaves time to connect.
	tok := s.token(t, user, 2*time.Second)
	d.connect("short", tok, map[string]any{"transports": []string{"websocket"}})
	d.next("short", "connect")
	if r := d.next("short", "disconnect"); r.Reason != "transport close" {
		t.Fatalf("disconnect reason %q, want transport close", r.Reason)
	}
	if r := d.next("short", "connect_error"); r.Message != "Authentication error: token expired" {
		t.Fatalf("reconnect: %q", r.Message)
	}
}

func TestClientShutdown(t *testing.T) {
	s := startServer(t, Config{})
	d := startDriver(t, s.url)
	user := uuid(0x12)
	for _, id := range []string{"ws", "poll"} {
		tr := map[string][]string{"ws": {"websocket"}, "poll": {"polling"}}[id]
		d.connect(id, s.token(t, user, time.Hour), map[string]any{"transports": tr, "reconnectionDelay": 5000})
		d.next(id, "connect")
	}
	s.waitSockets(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// A transport close makes the client reconnect; a namespace disconnect
	// ("io server disconnect") would stop it.
	for _, id := range []string{"ws", "poll"} {
		if r := d.next(id, "disconnect"); !slices.Contains([]string{"transport close", "transport error"}, r.Reason) {
			t.Fatalf("%s disconnect reason %q", id, r.Reason)
		}
	}
	s.waitSockets(t, 0)
}
