package socketio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recHandler records calls and implements the conformance echo.
type recHandler struct {
	refuse      string // Connect refuses with this message when set
	lastRefused *Socket
	pid         string
	mu          sync.Mutex
	connected   chan *Socket
	events      chan string
	discon      chan string
}

func newRecHandler() *recHandler {
	return &recHandler{connected: make(chan *Socket, 100), events: make(chan string, 100), discon: make(chan string, 100)}
}

func (h *recHandler) Connect(s *Socket, auth json.RawMessage) (ConnectReply, error) {
	if h.refuse != "" {
		h.lastRefused = s
		return ConnectReply{}, fmt.Errorf("%s", h.refuse)
	}
	if auth == nil {
		auth = json.RawMessage(`{}`)
	}
	s.SetValue(auth)
	return ConnectReply{PID: h.pid}, nil
}

func (h *recHandler) Connected(s *Socket) {
	_ = s.Emit("auth", s.Value())
	h.connected <- s
}

func (h *recHandler) Event(s *Socket, event string, args []json.RawMessage, ack func(args ...any)) {
	h.BinaryEvent(s, event, args, nil, ack)
}

func (h *recHandler) BinaryEvent(s *Socket, event string, args []json.RawMessage, atts [][]byte, ack func(args ...any)) {
	h.events <- fmt.Sprintf("%s %s %s %d", s.Namespace(), event, args, len(atts))
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		if n, ok := PlaceholderNum(a); ok {
			out[i] = Binary(atts[n])
		}
	}
	switch event {
	case "message":
		_ = s.Emit("message-back", out...)
	case "message-with-ack":
		ack(out...)
		ack("twice") // ignored
	case "disconnect-me":
		s.Disconnect()
	case "close-me":
		s.CloseTransport()
	}
}

func (h *recHandler) Disconnected(s *Socket, reason string) {
	h.discon <- s.Namespace() + " " + reason
}

func recv[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
		var zero T
		return zero
	}
}

type testServer struct {
	*Server
	h   *recHandler
	url string
}

func newTestServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.PingInterval == 0 {
		cfg.PingInterval = time.Minute
	}
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = time.Minute
	}
	s := NewServer(cfg)
	h := newRecHandler()
	s.Handle("/", h)
	s.Handle("/custom", h)
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{Server: s, h: h, url: hs.URL + "/socket.io/"}
}

// wsClient is a raw Engine.IO WebSocket client.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func (ts *testServer) dial(t *testing.T) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.url, "http")+"?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &wsClient{t, ws}
	if m := c.read(); !strings.HasPrefix(m, "0{") {
		t.Fatalf("handshake %q", m)
	}
	return c
}

func (c *wsClient) send(s string) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) sendBinary(b []byte) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, b); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next message that is not a ping; binary as "bin:<hex>".
func (c *wsClient) read() string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if typ == websocket.MessageBinary {
			return fmt.Sprintf("bin:%x", b)
		}
		if string(b) != "2" {
			return string(b)
		}
	}
}

// closed waits for the server to close the connection.
func (c *wsClient) closed() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			if ctx.Err() != nil {
				c.t.Fatal("connection not closed")
			}
			return
		}
	}
}

// connect joins namespace with the handler's echo and returns the sid.
func (c *wsClient) connect(packet string) string {
	c.t.Helper()
	c.send(packet)
	m := c.read()
	i := strings.Index(m, "{")
	if !strings.HasPrefix(m, "40") || i < 0 {
		c.t.Fatalf("CONNECT reply %q", m)
	}
	var reply map[string]string
	if err := json.Unmarshal([]byte(m[i:]), &reply); err != nil {
		c.t.Fatal(err)
	}
	return reply["sid"]
}

func TestConnect(t *testing.T) {
	ts := newTestServer(t, Config{})
	cases := []struct{ send, reply, auth string }{
		{"40", "40{", `42["auth",{}]`},
		{`40{"token":"123"}`, "40{", `42["auth",{"token":"123"}]`},
		{"40/custom,", "40/custom,{", `42/custom,["auth",{}]`},
		{`40/custom,{"token":"abc"}`, "40/custom,{", `42/custom,["auth",{"token":"abc"}]`},
	}
	for _, c := range cases {
		t.Run(c.send, func(t *testing.T) {
			cl := ts.dial(t)
			cl.send(c.send)
			m := cl.read()
			if !strings.HasPrefix(m, c.reply) {
				t.Fatalf("reply %q, want prefix %q", m, c.reply)
			}
			var reply map[string]any
			if err := json.Unmarshal([]byte(m[len(c.reply)-1:]), &reply); err != nil || len(reply) != 1 || reply["sid"] == "" {
				t.Errorf("reply %q: want exactly a sid", m)
			}
			s := recv(t, ts.h.connected)
			if reply["sid"] != s.ID() || s.Transport() != "websocket" || s.Handshake().Query.Get("EIO") != "4" {
				t.Errorf("socket %s %s %v", s.ID(), s.Transport(), s.Handshake().Query)
			}
			if m := cl.read(); m != c.auth {
				t.Errorf("auth event %q, want %q", m, c.auth)
			}
		})
	}
	t.Run("unknown namespace", func(t *testing.T) {
		cl := ts.dial(t)
		cl.send("40/random")
		if m := cl.read(); m != `44/random,{"message":"Invalid namespace"}` {
			t.Errorf("got %q", m)
		}
		cl.connect("40") // the connection is still usable
	})
	t.Run("unknown namespace too long to repeat", func(t *testing.T) {
		// The refusal would queue the name again for every CONNECT.
		cl := ts.dial(t)
		cl.send("40/" + strings.Repeat("n", maxUnknownNamespace))
		cl.closed()
	})
}

func TestConnectRefusedAndPID(t *testing.T) {
	ts := newTestServer(t, Config{})
	ts.h.refuse = "Authentication error: invalid token"
	cl := ts.dial(t)
	cl.send(`40{"token":"x"}`)
	if m := cl.read(); m != `44{"message":"Authentication error: invalid token"}` {
		t.Errorf("got %q", m)
	}
	if s := ts.h.lastRefused; s == nil || s.Send(EncodeEvent("/", "x")) || s.Emit("x") == nil {
		t.Error("a refused socket can send")
	} else {
		<-s.Done()
	}
	ts.h.refuse = ""
	ts.h.pid = "p1"
	cl.send("40")
	m := cl.read()
	var reply map[string]string
	if err := json.Unmarshal([]byte(m[2:]), &reply); err != nil || reply["pid"] != "p1" || reply["sid"] == "" {
		t.Errorf("reply %q", m)
	}
}

func TestBadPacketsClose(t *testing.T) {
	ts := newTestServer(t, Config{})
	for _, c := range []struct {
		name string
		send func(cl *wsClient)
	}{
		{"invalid handshake", func(cl *wsClient) { cl.send("4abc") }},
		{"event object", func(cl *wsClient) { cl.connect("40"); cl.read(); cl.send("42{}") }},
		{"bad ack id", func(cl *wsClient) { cl.connect("40"); cl.read(); cl.send(`42abc["message-with-ack",1]`) }},
		{"unexpected attachment", func(cl *wsClient) { cl.connect("40"); cl.read(); cl.sendBinary([]byte{1}) }},
		{"text instead of attachment", func(cl *wsClient) {
			cl.connect("40")
			cl.read()
			cl.send(`451-["message",{"_placeholder":true,"num":0}]`)
			cl.send(`42["message"]`)
		}},
		{"placeholder out of range", func(cl *wsClient) {
			cl.connect("40")
			cl.read()
			cl.send(`451-["message",{"_placeholder":true,"num":1}]`)
			cl.sendBinary([]byte{1})
		}},
		{"connect error from client", func(cl *wsClient) { cl.send(`44{"message":"x"}`) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := ts.dial(t)
			c.send(cl)
			cl.closed()
		})
	}
	// Connected sockets ended with "parse error".
	for range 5 {
		if r := recv(t, ts.h.discon); r != "/ parse error" {
			t.Errorf("disconnect %q", r)
		}
	}
}

func TestConnectTimeout(t *testing.T) {
	// Long enough that a loaded machine still CONNECTs the kept ones in
	// time (at 50 ms, a stall failed one run in thousands).
	const timeout = 500 * time.Millisecond
	ts := newTestServer(t, Config{ConnectTimeout: timeout})
	cl := ts.dial(t)
	cl.closed()
	// A connection that joined a namespace is kept.
	cl = ts.dial(t)
	cl.connect("40")
	time.Sleep(timeout + 100*time.Millisecond)
	cl.send(`42["message","still here"]`)
	cl.read() // auth
	if m := cl.read(); m != `42["message-back","still here"]` {
		t.Errorf("got %q", m)
	}
	// One left without a namespace has the same time to join again, no
	// more: nothing else (no token) would ever end it. Whether its
	// client's DISCONNECT left it so, the server's, or a second CONNECT
	// that was refused.
	recv(t, ts.h.connected)
	closedAfterTimeout := func(cl *wsClient, how string) {
		t.Helper()
		start := time.Now()
		cl.closed()
		if d := time.Since(start); d < timeout*4/5 {
			t.Errorf("%s: closed after %v, before the connect timeout", how, d)
		}
	}
	cl.send("41")
	closedAfterTimeout(cl, "client DISCONNECT")

	cl = ts.dial(t)
	cl.connect("40")
	cl.read() // auth
	recv(t, ts.h.connected).Disconnect()
	if m := cl.read(); m != "41" {
		t.Fatalf("server DISCONNECT: got %q", m)
	}
	closedAfterTimeout(cl, "server DISCONNECT")

	cl = ts.dial(t)
	cl.connect("40")
	cl.read() // auth
	recv(t, ts.h.connected)
	ts.h.refuse = "no"
	cl.send("40")
	if m := cl.read(); !strings.HasPrefix(m, "44") {
		t.Fatalf("second CONNECT: got %q, want CONNECT_ERROR", m)
	}
	closedAfterTimeout(cl, "refused second CONNECT")
	ts.h.refuse = ""
}

func TestEventsAndAcks(t *testing.T) {
	ts := newTestServer(t, Config{})
	cl := ts.dial(t)
	cl.connect("40")
	cl.read() // auth
	cl.send(`42["message",1,"2",{"3":[true]}]`)
	if m := cl.read(); m != `42["message-back",1,"2",{"3":[true]}]` {
		t.Errorf("echo %q", m)
	}
	if e := recv(t, ts.h.events); e != `/ message [1 "2" {"3":[true]}] 0` {
		t.Errorf("event %q", e)
	}
	cl.send(`42456["message-with-ack",1,"2",{"3":[false]}]`)
	if m := cl.read(); m != `43456[1,"2",{"3":[false]}]` {
		t.Errorf("ack %q", m)
	}
	cl.send(`452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
	cl.sendBinary([]byte{1, 2, 3})
	cl.sendBinary([]byte{4, 5, 6})
	for _, want := range []string{`452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, "bin:010203", "bin:040506"} {
		if m := cl.read(); m != want {
			t.Errorf("binary echo %q, want %q", m, want)
		}
	}
	cl.send(`452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
	cl.sendBinary([]byte{1, 2, 3})
	cl.sendBinary([]byte{4, 5, 6})
	for _, want := range []string{`462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, "bin:010203", "bin:040506"} {
		if m := cl.read(); m != want {
			t.Errorf("binary ack %q, want %q", m, want)
		}
	}
	// The second ack call was ignored; the next message is the next answer.
	cl.send(`42["message","next"]`)
	if m := cl.read(); m != `42["message-back","next"]` {
		t.Errorf("after acks %q", m)
	}
	// Events for a namespace not joined, and client acks, are ignored.
	cl.send(`42/custom,["message","x"]`)
	cl.send(`431["x"]`)
	cl.send(`42["message","last"]`)
	if m := cl.read(); m != `42["message-back","last"]` {
		t.Errorf("after ignored packets %q", m)
	}
}

func TestNamespacesAndDisconnect(t *testing.T) {
	ts := newTestServer(t, Config{})
	cl := ts.dial(t)
	cl.connect("40")
	cl.read()
	cl.connect("40/custom,")
	cl.read()
	cl.send(`42/custom,["message","c"]`)
	if m := cl.read(); m != `42/custom,["message-back","c"]` {
		t.Errorf("custom echo %q", m)
	}
	cl.send("41/custom,")
	if r := recv(t, ts.h.discon); r != "/custom client namespace disconnect" {
		t.Errorf("disconnect %q", r)
	}
	cl.send(`42/custom,["message","gone"]`)
	cl.send(`42["message","main"]`)
	if m := cl.read(); m != `42["message-back","main"]` {
		t.Errorf("main echo %q", m)
	}
	// Server-side disconnect: a DISCONNECT packet, then Disconnected.
	cl.send(`42["disconnect-me"]`)
	if m := cl.read(); m != "41" {
		t.Errorf("got %q, want DISCONNECT", m)
	}
	if r := recv(t, ts.h.discon); r != "/ server namespace disconnect" {
		t.Errorf("disconnect %q", r)
	}
	// The engine connection survives; the client may connect again.
	cl.connect("40")
	cl.read()
	cl.send(`42["close-me"]`)
	cl.closed()
	if r := recv(t, ts.h.discon); r != "/ forced close" {
		t.Errorf("disconnect %q", r)
	}
}

// TestSendOrderPolling sends shared frames to a polling socket and reads
// them back joined in one response, in order.
func TestSendOrderPolling(t *testing.T) {
	ts := newTestServer(t, Config{})
	get := func(sid string) string {
		resp, err := http.Get(ts.url + "?EIO=4&transport=polling&sid=" + sid)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	resp, err := http.Get(ts.url + "?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var open struct{ SID string }
	if err := json.Unmarshal(b[1:], &open); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Post(ts.url+"?EIO=4&transport=polling&sid="+open.SID, "text/plain", strings.NewReader("40")); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	s := recv(t, ts.h.connected)
	if s.Transport() != "polling" {
		t.Errorf("transport %q", s.Transport())
	}
	f1 := EncodeEvent("/", "event:assigned", json.RawMessage(`{"id":1}`), json.RawMessage(`"0000000000000001-0000"`))
	f2 := EncodeEvent("/", "event:assigned", json.RawMessage(`{"id":2}`), json.RawMessage(`"0000000000000001-0001"`))
	if !s.Send(f1) || !s.Send(f2) {
		t.Fatal("send refused")
	}
	got := get(open.SID)
	want := `40{"sid":"` + s.ID() + `"}` + "\x1e" + `42["auth",{}]` + "\x1e" + string(f1) + "\x1e" + string(f2)
	if got != want {
		t.Errorf("poll:\n got %q\nwant %q", got, want)
	}
}

func TestSlowConsumerAndShutdown(t *testing.T) {
	ts := newTestServer(t, Config{Config: engineio.Config{SendQueue: 8}})
	cl := ts.dial(t)
	cl.connect("40")
	s := recv(t, ts.h.connected)
	// Nothing reads while we queue far more than fits: the writer can drain
	// into the socket buffers, so send until refused.
	f := EncodeEvent("/", "x", json.RawMessage(strings.Repeat(`"xxxxxxxx",`, 10000)+`1`))
	sent := 0
	for s.Send(f) {
		sent++
		if sent > 100000 {
			t.Fatal("queue never filled")
		}
	}
	<-s.Done()
	if r := recv(t, ts.h.discon); r != "/ "+engineio.ReasonSlowConsumer {
		t.Errorf("disconnect %q", r)
	}
	if err := s.Emit("late"); err != ErrNotSent {
		t.Errorf("emit after end: %v", err)
	}

	cl2 := ts.dial(t)
	cl2.connect("40/custom,")
	recv(t, ts.h.connected)
	readDone := make(chan error, 1)
	go func() { // a live client answers the closing handshake
		for {
			if _, _, err := cl2.ws.Read(context.Background()); err != nil {
				readDone <- err
				return
			}
		}
	}()
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-readDone; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("client saw %v, want going away", err)
	}
	if r := recv(t, ts.h.discon); r != "/custom server shutting down" {
		t.Errorf("disconnect %q", r)
	}
	if ts.Conns() != 0 {
		t.Errorf("%d connections left", ts.Conns())
	}
}

// fuzzHandler counts what reaches it.
type fuzzHandler struct{ events, attachments int }

func (h *fuzzHandler) Connect(*Socket, json.RawMessage) (ConnectReply, error) {
	return ConnectReply{}, nil
}
func (h *fuzzHandler) Connected(*Socket) {}
func (h *fuzzHandler) Event(s *Socket, e string, args []json.RawMessage, ack func(...any)) {
	h.BinaryEvent(s, e, args, nil, ack)
}
func (h *fuzzHandler) BinaryEvent(s *Socket, e string, args []json.RawMessage, atts [][]byte, ack func(...any)) {
	h.events++
	h.attachments += len(atts)
	for _, a := range args {
		if n, ok := PlaceholderNum(a); ok && (n < 0 || n >= len(atts)) {
			panic(fmt.Sprintf("placeholder %d of %d attachments reached the handler", n, len(atts)))
		}
	}
	if ack != nil {
		ack(args)
	}
}
func (h *fuzzHandler) Disconnected(*Socket, string) {}

// newMemClient opens an in-memory polling connection to a fresh server
// serving h on "/", joins "/", and returns its client. The server is shut
// down with the test.
func newMemClient(tb testing.TB, h Handler) *client {
	tb.Helper()
	s := NewServer(Config{Config: engineio.Config{PingInterval: time.Hour, PingTimeout: time.Hour}})
	s.Handle("/", h)
	var cl *client
	s.onOpen = func(c *client) { cl = c }
	s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/socket.io/?EIO=4&transport=polling", nil))
	tb.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	cl.onMessage([]byte("0"), false)
	return cl
}

// countingHandler counts the CONNECTs of each engine connection in its
// ConnValue, refusing the third with data and the fourth with a close.
type countingHandler struct{}

func (countingHandler) Connect(s *Socket, _ json.RawMessage) (ConnectReply, error) {
	n, _ := s.ConnValue().(int)
	n++
	s.SetConnValue(n)
	switch {
	case s.Namespace() != "/":
		return ConnectReply{}, fmt.Errorf("Invalid namespace")
	case n == 3:
		return ConnectReply{}, &ConnectRefusal{Message: "slow down", Data: map[string]int{"n": n}}
	case n >= 4:
		return ConnectReply{}, &ConnectRefusal{Message: "slow down", Data: map[string]int{"n": n}, Close: true}
	}
	return ConnectReply{PID: fmt.Sprint(n)}, nil
}
func (countingHandler) Connected(*Socket)                                      {}
func (countingHandler) Event(*Socket, string, []json.RawMessage, func(...any)) {}
func (countingHandler) Disconnected(*Socket, string)                           {}

// TestConnValueAndRefusals: a connection's value is shared by the sockets
// it opens one after another and by every namespace (HandleOthers sees
// the unknown ones), a ConnectRefusal's data reaches the CONNECT_ERROR, and
// its Close closes the connection after it.
func TestConnValueAndRefusals(t *testing.T) {
	ts := newTestServer(t, Config{})
	ts.Handle("/", countingHandler{})
	ts.HandleOthers(countingHandler{})
	cl := ts.dial(t)
	for i, want := range []string{
		`40{"sid":`,
		`44/other,{"message":"Invalid namespace"}`,
		`44{"message":"slow down","data":{"n":3}}`,
		`44{"message":"slow down","data":{"n":4}}`,
	} {
		if i == 1 {
			cl.send("40/other,")
		} else {
			cl.send("40")
		}
		if m := cl.read(); !strings.HasPrefix(m, want) {
			t.Fatalf("CONNECT %d: %q, want %s…", i+1, m, want)
		}
	}
	cl.closed()
	// Another connection counts from the start.
	cl = ts.dial(t)
	cl.send("40")
	if m := cl.read(); !strings.HasPrefix(m, `40{"sid":`) || !strings.HasSuffix(m, `"pid":"1"}`) {
		t.Fatalf("first CONNECT of a new connection: %q", m)
	}
}
