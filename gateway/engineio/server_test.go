package engineio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recHandler records the life of connections and echoes messages.
type recHandler struct {
	noEcho bool
	opened chan *Conn
	closed chan string // reasons
	mu     sync.Mutex
	msgs   []string
}

func newRecHandler() *recHandler {
	return &recHandler{opened: make(chan *Conn, 100), closed: make(chan string, 100)}
}

func (h *recHandler) Open(c *Conn) { h.opened <- c }

func (h *recHandler) Message(c *Conn, data []byte, binary bool) {
	h.mu.Lock()
	h.msgs = append(h.msgs, fmt.Sprintf("%v:%q", binary, data))
	h.mu.Unlock()
	if h.noEcho {
		return
	}
	if binary {
		c.SendPackets(Packet{Data: data, Binary: true})
	} else {
		c.SendText(append([]byte{TypeMessage}, data...))
	}
}

func (h *recHandler) Close(c *Conn, reason string) { h.closed <- reason }

func (h *recHandler) waitClose(t *testing.T) string {
	t.Helper()
	select {
	case r := <-h.closed:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed")
		return ""
	}
}

type testServer struct {
	*Server
	h   *recHandler
	url string // http://host/engine.io/
}

// newTestServer starts a Server with long heartbeats unless cfg sets them.
func newTestServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.PingInterval == 0 {
		cfg.PingInterval = time.Minute
	}
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = time.Minute
	}
	h := newRecHandler()
	s := NewServer(cfg, h)
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{Server: s, h: h, url: hs.URL + "/engine.io/"}
}

func do(t *testing.T, method, url string, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

type openPacket struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int      `json:"pingInterval"`
	PingTimeout  int      `json:"pingTimeout"`
	MaxPayload   int      `json:"maxPayload"`
}

func parseOpen(t *testing.T, body string) openPacket {
	t.Helper()
	if !strings.HasPrefix(body, "0") {
		t.Fatalf("handshake %q does not start with 0", body)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body[1:]), &fields); err != nil {
		t.Fatal(err)
	}
	if len(fields) != 5 {
		t.Errorf("open packet has fields %v, want exactly sid, upgrades, pingInterval, pingTimeout, maxPayload", fields)
	}
	var o openPacket
	if err := json.Unmarshal([]byte(body[1:]), &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func (ts *testServer) handshake(t *testing.T) string {
	t.Helper()
	status, body, _ := do(t, "GET", ts.url+"?EIO=4&transport=polling", "")
	if status != 200 {
		t.Fatalf("handshake: %d %s", status, body)
	}
	return parseOpen(t, body).SID
}

func (ts *testServer) poll(t *testing.T, sid string) (int, string) {
	t.Helper()
	status, body, _ := do(t, "GET", ts.url+"?EIO=4&transport=polling&sid="+sid, "")
	return status, body
}

func (ts *testServer) post(t *testing.T, sid, body string) (int, string) {
	t.Helper()
	status, b, _ := do(t, "POST", ts.url+"?EIO=4&transport=polling&sid="+sid, body)
	return status, b
}

func (ts *testServer) dial(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.url, "http")+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

func read(t *testing.T, ws *websocket.Conn) (websocket.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, string(b)
}

func write(t *testing.T, ws *websocket.Conn, s string) {
	t.Helper()
	if err := ws.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readErr reads until the connection fails and returns the error.
func readErr(t *testing.T, ws *websocket.Conn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("connection not closed")
			}
			return err
		}
	}
}

func TestHandshake(t *testing.T) {
	// Heartbeats long enough that the polling session, never polled, is
	// not closed for a ping timeout while the WebSocket half runs: both
	// report their close on the same channel.
	ts := newTestServer(t, Config{PingInterval: 30 * time.Second, PingTimeout: 20 * time.Second})
	status, body, hdr := do(t, "GET", ts.url+"?EIO=4&transport=polling", "")
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("polling handshake: %d %s", status, hdr.Get("Content-Type"))
	}
	o := parseOpen(t, body)
	want := openPacket{SID: o.SID, Upgrades: []string{"websocket"}, PingInterval: 30000, PingTimeout: 20000, MaxPayload: 1_000_000}
	if o.SID == "" || fmt.Sprint(o) != fmt.Sprint(want) {
		t.Errorf("polling open = %+v, want %+v", o, want)
	}

	ws := ts.dial(t, "EIO=4&transport=websocket")
	_, msg := read(t, ws)
	o = parseOpen(t, msg)
	want = openPacket{SID: o.SID, Upgrades: []string{}, PingInterval: 30000, PingTimeout: 20000, MaxPayload: 1_000_000}
	if o.SID == "" || fmt.Sprint(o) != fmt.Sprint(want) {
		t.Errorf("websocket open = %+v, want %+v", o, want)
	}
	// An empty list, not null: engine.io-client reads upgrades.length.
	if !strings.Contains(msg, `"upgrades":[]`) {
		t.Errorf("websocket open %s: upgrades is not an empty list", msg)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	if r := ts.h.waitClose(t); r != ReasonTransportClose {
		t.Errorf("close reason %q, want %q", r, ReasonTransportClose)
	}
}

func TestErrorAnswers(t *testing.T) {
	ts := newTestServer(t, Config{AllowedOrigins: []string{"http://app.example"}})
	sid := ts.handshake(t)
	cases := []struct {
		name, method, query string
		hdr                 []string
		status              int
		body                string
	}{
		{"no transport", "GET", "EIO=4", nil, 400, `{"code":0,"message":"Transport unknown"}`},
		{"bad transport", "GET", "EIO=4&transport=abc", nil, 400, `{"code":0,"message":"Transport unknown"}`},
		{"unknown sid", "GET", "EIO=4&transport=polling&sid=nope", nil, 400, `{"code":1,"message":"Session ID unknown"}`},
		{"handshake by POST", "POST", "EIO=4&transport=polling", nil, 400, `{"code":2,"message":"Bad handshake method"}`},
		{"handshake by PUT", "PUT", "EIO=4&transport=polling", nil, 400, `{"code":2,"message":"Bad handshake method"}`},
		{"no EIO", "GET", "transport=polling", nil, 400, `{"code":5,"message":"Unsupported protocol version"}`},
		{"EIO=abc", "GET", "EIO=abc&transport=polling", nil, 400, `{"code":5,"message":"Unsupported protocol version"}`},
		{"EIO=3", "GET", "EIO=3&transport=polling", nil, 400, `{"code":5,"message":"Unsupported protocol version"}`},
		{"websocket without upgrade", "GET", "EIO=4&transport=websocket", nil, 400, `{"code":3,"message":"Bad request"}`},
		{"PUT with sid", "PUT", "EIO=4&transport=polling&sid=" + sid, nil, 400, `{"code":3,"message":"Bad request"}`},
		{"foreign origin", "GET", "EIO=4&transport=polling", []string{"Origin", "http://evil.example"}, 403, `{"code":4,"message":"Forbidden"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, hdr := do(t, c.method, ts.url+"?"+c.query, "", c.hdr...)
			if status != c.status || body != c.body {
				t.Errorf("%d %s, want %d %s", status, body, c.status, c.body)
			}
			if hdr.Get("Content-Type") != "application/json" {
				t.Errorf("content type %q", hdr.Get("Content-Type"))
			}
		})
	}
	// A WebSocket handshake with bad parameters is refused before the upgrade.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, q := range []string{"transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc", "EIO=4&transport=polling", "EIO=4&transport=websocket&sid=nope"} {
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.url, "http")+"?"+q, nil)
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Errorf("websocket %s: err %v, resp %v; want 400", q, err, resp)
		}
	}
}

func TestCORS(t *testing.T) {
	ts := newTestServer(t, Config{AllowedOrigins: []string{"http://app.example", "http://[::1]:5173/"}})
	_, _, hdr := do(t, "GET", ts.url+"?EIO=4&transport=polling", "", "Origin", "http://app.example")
	if hdr.Get("Access-Control-Allow-Origin") != "http://app.example" || hdr.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("allowed origin: headers %v", hdr)
	}
	status, _, hdr := do(t, "OPTIONS", ts.url+"?EIO=4&transport=polling", "",
		"Origin", "http://app.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
	if status != 204 || hdr.Get("Access-Control-Allow-Headers") != "content-type" || !strings.Contains(hdr.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", status, hdr)
	}
	status, _, _ = do(t, "OPTIONS", ts.url, "", "Origin", "http://evil.example", "Access-Control-Request-Method", "GET")
	if status != 403 {
		t.Errorf("preflight from a foreign origin: %d, want 403", status)
	}
	// A foreign origin cannot open a WebSocket either; an allowed one can.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(ts.url, "http") + "?EIO=4&transport=websocket"
	_, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	if err == nil || resp.StatusCode != 403 {
		t.Errorf("foreign websocket: %v", err)
	}
	for _, origin := range []string{"http://app.example", "http://[::1]:5173"} {
		ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		if err != nil {
			t.Fatalf("allowed websocket from %s: %v", origin, err)
		}
		ws.CloseNow()
	}

	// "*" reflects any origin, with credentials.
	any := newTestServer(t, Config{AllowedOrigins: []string{"*"}})
	_, _, hdr = do(t, "GET", any.url+"?EIO=4&transport=polling", "", "Origin", "http://x.example:8080")
	if hdr.Get("Access-Control-Allow-Origin") != "http://x.example:8080" || hdr.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("wildcard: headers %v", hdr)
	}
}

func TestPollingMessages(t *testing.T) {
	ts := newTestServer(t, Config{})
	for _, body := range []string{"4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA=="} {
		sid := ts.handshake(t)
		if status, b := ts.post(t, sid, body); status != 200 || b != "ok" {
			t.Fatalf("post: %d %s", status, b)
		}
		if status, b := ts.poll(t, sid); status != 200 || b != body {
			t.Errorf("poll = %d %q, want echo %q", status, b, body)
		}
	}
}

func TestPollingBadPacketClosesSession(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	if status, _ := ts.post(t, sid, "abc"); status != 400 {
		t.Errorf("bad packet: %d, want 400", status)
	}
	if r := ts.h.waitClose(t); r != ReasonParseError {
		t.Errorf("reason %q", r)
	}
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("poll after close: %d, want 400", status)
	}
	// Packets before the malformed one were delivered, as by the reference server.
	sid = ts.handshake(t)
	if status, _ := ts.post(t, sid, "4first\x1e4second\x1e9bad\x1e4never"); status != 400 {
		t.Errorf("bad packet: %d, want 400", status)
	}
	ts.h.waitClose(t)
	ts.h.mu.Lock()
	got := strings.Join(ts.h.msgs, " ")
	ts.h.mu.Unlock()
	if got != `false:"first" false:"second"` {
		t.Errorf("delivered %s", got)
	}
}

func TestDuplicatePollClosesSession(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	first := make(chan string)
	go func() {
		resp, err := http.Get(ts.url + "?EIO=4&transport=polling&sid=" + sid)
		if err != nil {
			first <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	waitFor(t, func() bool { c := ts.lookup(sid); c.mu.Lock(); defer c.mu.Unlock(); return c.getPending })
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("second poll: %d, want 400", status)
	}
	if got := <-first; got != "200 1" {
		t.Errorf("first poll = %q, want the close packet", got)
	}
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("poll after close: %d", status)
	}
	ts.h.waitClose(t)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in time")
}

func TestClientClose(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	pollDone := make(chan string)
	go func() {
		resp, err := http.Get(ts.url + "?EIO=4&transport=polling&sid=" + sid)
		if err != nil {
			pollDone <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		pollDone <- string(b)
	}()
	waitFor(t, func() bool { c := ts.lookup(sid); c.mu.Lock(); defer c.mu.Unlock(); return c.getPending })
	ts.post(t, sid, "1")
	if got := <-pollDone; got != "6" {
		t.Errorf("pending poll got %q, want noop", got)
	}
	if r := ts.h.waitClose(t); r != ReasonTransportClose {
		t.Errorf("reason %q", r)
	}
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("poll after close: %d", status)
	}

	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws)
	write(t, ws, "1")
	readErr(t, ws)
	if r := ts.h.waitClose(t); r != ReasonTransportClose {
		t.Errorf("websocket reason %q", r)
	}
}

func TestWebSocketMessages(t *testing.T) {
	ts := newTestServer(t, Config{})
	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws)
	write(t, ws, "4hello")
	if typ, m := read(t, ws); typ != websocket.MessageText || m != "4hello" {
		t.Errorf("echo %v %q", typ, m)
	}
	if err := ws.Write(context.Background(), websocket.MessageBinary, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if typ, m := read(t, ws); typ != websocket.MessageBinary || m != "\x01\x02\x03\x04" {
		t.Errorf("binary echo %v %q", typ, m)
	}
	write(t, ws, "abc")
	if err := readErr(t, ws); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("bad packet: %v", err)
	}
	if r := ts.h.waitClose(t); r != ReasonParseError {
		t.Errorf("reason %q", r)
	}
}

func TestHeartbeat(t *testing.T) {
	ts := newTestServer(t, Config{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	t.Run("polling", func(t *testing.T) {
		sid := ts.handshake(t)
		for range 3 {
			if status, b := ts.poll(t, sid); status != 200 || b != "2" {
				t.Fatalf("poll = %d %q, want ping", status, b)
			}
			ts.post(t, sid, "3")
		}
		if r := ts.h.waitClose(t); r != ReasonPingTimeout {
			t.Errorf("reason %q", r)
		}
		if status, _ := ts.poll(t, sid); status != 400 {
			t.Errorf("poll after ping timeout: %d", status)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		ws := ts.dial(t, "EIO=4&transport=websocket")
		read(t, ws)
		for range 3 {
			if _, m := read(t, ws); m != "2" {
				t.Fatalf("got %q, want ping", m)
			}
			write(t, ws, "3")
		}
		readErr(t, ws) // no pong: closed
		if r := ts.h.waitClose(t); r != ReasonPingTimeout {
			t.Errorf("reason %q", r)
		}
	})
}

func TestMaxPayload(t *testing.T) {
	ts := newTestServer(t, Config{MaxPayload: 100})
	sid := ts.handshake(t)
	if status, _ := ts.post(t, sid, "4"+strings.Repeat("x", 100)); status != 413 {
		t.Errorf("large POST: %d, want 413", status)
	}
	ts.h.waitClose(t)
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("poll after refusal: %d", status)
	}

	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws)
	write(t, ws, "4"+strings.Repeat("x", 99)) // exactly the limit
	if _, m := read(t, ws); len(m) != 100 {
		t.Errorf("echo of %d bytes", len(m))
	}
	write(t, ws, "4"+strings.Repeat("x", 100))
	if err := readErr(t, ws); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("large message: %v, want close 1009", err)
	}
	ts.h.waitClose(t)
}

func TestSlowConsumer(t *testing.T) {
	ts := newTestServer(t, Config{SendQueue: 4})
	ts.handshake(t)
	c := <-ts.h.opened
	for i := range 4 {
		if !c.SendText([]byte("4x")) {
			t.Fatalf("send %d refused", i)
		}
	}
	if c.SendText([]byte("4x")) {
		t.Fatal("fifth send accepted beyond SendQueue")
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("connection not closed")
	}
	if r := ts.h.waitClose(t); r != ReasonSlowConsumer {
		t.Errorf("reason %q", r)
	}
	if c.SendText([]byte("4x")) {
		t.Error("send after close accepted")
	}
}

// TestOfferFrames: OfferFrames queues the longest prefix of the references
// that fits, in order, from any number of sets, never closes the
// connection for a full queue (SendText would), and queues nothing once
// the connection is closed.
func TestOfferFrames(t *testing.T) {
	ts := newTestServer(t, Config{SendQueue: 4})
	sid := ts.handshake(t)
	c := <-ts.h.opened
	set := func(s ...string) *Frames {
		var ps []Packet
		for _, x := range s {
			ps = append(ps, Packet{Data: []byte(x)})
		}
		return NewFrames(ps)
	}
	sets := []*Frames{set("4a", "4b", "4c", "4d"), set("4e", "4f")}
	for _, step := range []struct {
		refs []FrameRef
		want int
	}{
		{[]FrameRef{{0, 2}, {1, 1}, {0, 0}}, 3}, // interleaved sets
		{[]FrameRef{{0, 3}, {0, 1}}, 1},
		{[]FrameRef{{1, 0}}, 0},
		{nil, 0},
	} {
		if n := c.OfferFrames(sets, step.refs); n != step.want {
			t.Fatalf("OfferFrames(%v) = %d, want %d", step.refs, n, step.want)
		}
	}
	select {
	case <-c.Done():
		t.Fatal("a full queue closed the connection")
	default:
	}
	if status, b := ts.poll(t, sid); status != 200 || b != "4c\x1e4f\x1e4a\x1e4d" {
		t.Fatalf("poll = %d %q, want the four packets taken, in order", status, b)
	}
	if n := c.OfferFrames(sets, []FrameRef{{1, 0}, {1, 1}}); n != 2 {
		t.Fatalf("OfferFrames after the queue was taken = %d, want 2", n)
	}
	c.Close()
	if n := c.OfferFrames(sets, []FrameRef{{0, 0}}); n != 0 {
		t.Fatalf("OfferFrames on a closed connection = %d, want 0", n)
	}
}

// TestUpgradeOrder sends numbered frames from the server all through an
// upgrade and checks that the client sees each exactly once, in order.
func TestUpgradeOrder(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	c := <-ts.h.opened
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !c.SendText([]byte(fmt.Sprintf("4%d", n))) {
				return
			}
			n++
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var got []string
	collect := func(payload string) {
		for _, p := range strings.Split(payload, "\x1e") {
			if p != "6" {
				got = append(got, p)
			}
		}
	}
	_, b := ts.poll(t, sid)
	collect(b)
	ws := ts.dial(t, "EIO=4&transport=websocket&sid="+sid)
	write(t, ws, "2probe")
	if _, m := read(t, ws); m != "3probe" {
		t.Fatalf("probe answer %q", m)
	}
	// Poll until the noop that lets the client pause polling.
	for {
		status, b := ts.poll(t, sid)
		if status != 200 {
			t.Fatalf("poll during upgrade: %d", status)
		}
		collect(b)
		if strings.HasSuffix(b, "6") {
			break
		}
	}
	write(t, ws, "5")
	if c.Transport() != "websocket" {
		waitFor(t, func() bool { return c.Transport() == "websocket" })
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	n := <-sent
	for len(got) < n {
		_, m := read(t, ws)
		got = append(got, m)
	}
	for i, m := range got {
		if m != fmt.Sprintf("4%d", i) {
			t.Fatalf("frame %d is %q (of %d frames)", i, m, n)
		}
	}
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("poll after upgrade: %d, want 400", status)
	}
	// A second upgrade of the same session is accepted and closed at once.
	ws2 := ts.dial(t, "EIO=4&transport=websocket&sid="+sid)
	readErr(t, ws2)
	write(t, ws, "4after")
	if _, m := read(t, ws); m != "4after" {
		t.Errorf("echo after upgrade %q", m)
	}
}

func TestShutdown(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws)
	pollDone := make(chan string)
	go func() {
		resp, err := http.Get(ts.url + "?EIO=4&transport=polling&sid=" + sid)
		if err != nil {
			pollDone <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		pollDone <- string(b)
	}()
	waitFor(t, func() bool { c := ts.lookup(sid); c.mu.Lock(); defer c.mu.Unlock(); return c.getPending })
	wsErr := make(chan error, 1)
	go func() { // a live client answers the closing handshake
		_, _, err := ws.Read(context.Background())
		wsErr <- err
	}()
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := <-pollDone; got != "1" {
		t.Errorf("pending poll got %q, want the close packet", got)
	}
	if err := <-wsErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("websocket: %v, want going away", err)
	}
	for range 2 {
		if r := ts.h.waitClose(t); r != ReasonShutdown {
			t.Errorf("reason %q", r)
		}
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	if status, _, _ := do(t, "GET", ts.url+"?EIO=4&transport=polling", ""); status != 503 {
		t.Errorf("handshake after shutdown: %d", status)
	}
	if ts.Len() != 0 {
		t.Errorf("%d sessions left", ts.Len())
	}
}

// BenchmarkSendText queues one shared frame on many polling connections and
// drains them: the send path allocates nothing per recipient.
func BenchmarkSendText(b *testing.B) {
	const conns = 1000
	h := newRecHandler()
	h.opened = make(chan *Conn, conns)
	h.closed = make(chan string, conns)
	s := NewServer(Config{PingInterval: time.Hour, PingTimeout: time.Hour, SendQueue: 1 << 20}, h)
	var cs []*Conn
	for range conns {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/engine.io/?EIO=4&transport=polling", nil))
		cs = append(cs, <-h.opened)
	}
	frame := bytes.Repeat([]byte("x"), 200)
	frame[0] = TypeMessage
	drain := func() { // what a consumer does, keeping the queues' capacity
		for _, c := range cs {
			c.mu.Lock()
			batch := c.takeLocked(-1)
			c.mu.Unlock()
			putPackets(batch)
		}
	}
	for range 2 { // warm up: both swap buffers reach their working size
		for range 256 {
			for _, c := range cs {
				c.SendText(frame)
			}
		}
		drain()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for _, c := range cs {
			c.SendText(frame)
		}
		if i%256 == 255 {
			b.StopTimer()
			drain()
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*conns), "ns/send")
	_ = s.Shutdown(context.Background())
}

// TestConcurrentSendAndClose races senders against a slow reader, Close and
// Shutdown (run with -race); every sender stops with false, none blocks.
func TestConcurrentSendAndClose(t *testing.T) {
	ts := newTestServer(t, Config{SendQueue: 64})
	ts.h.noEcho = true
	for round := range 2 {
		ws := ts.dial(t, "EIO=4&transport=websocket")
		c := <-ts.h.opened
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				f := []byte(fmt.Sprintf("4sender %d", g))
				for c.SendText(f) {
					if g == 0 && round == 0 {
						time.Sleep(time.Microsecond)
					}
				}
			})
		}
		go func() {
			for {
				if _, _, err := ws.Read(context.Background()); err != nil {
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		time.Sleep(5 * time.Millisecond)
		if round == 0 {
			c.Close()
		} else {
			if err := ts.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		ts.h.waitClose(t)
	}
}

// TestCompetingUpgrade opens two WebSockets for one polling session before
// either probes: the one that completes the upgrade is kept, the other is
// closed at once.
func TestCompetingUpgrade(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	ws1 := ts.dial(t, "EIO=4&transport=websocket&sid="+sid)
	ws2 := ts.dial(t, "EIO=4&transport=websocket&sid="+sid)
	write(t, ws1, "2probe")
	if _, m := read(t, ws1); m != "3probe" {
		t.Fatalf("probe answer %q", m)
	}
	write(t, ws1, "5")
	readErr(t, ws2)
	write(t, ws1, "4kept")
	if _, m := read(t, ws1); m != "4kept" {
		t.Errorf("echo %q", m)
	}
}

// panicHandler panics on "4panic".
type panicHandler struct{ *recHandler }

func (h panicHandler) Message(c *Conn, data []byte, binary bool) {
	if string(data) == "panic" {
		panic("handler bug")
	}
	h.recHandler.Message(c, data, binary)
}

// TestHandlerPanic: a panicking Handler closes its connection (net/http
// logs the panic); the server and other connections go on.
func TestHandlerPanic(t *testing.T) {
	h := panicHandler{newRecHandler()}
	s := NewServer(Config{PingInterval: time.Minute, PingTimeout: time.Minute}, h)
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.Start()
	defer hs.Close()
	defer s.Shutdown(context.Background())
	ts := &testServer{Server: s, h: h.recHandler, url: hs.URL + "/engine.io/"}

	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws)
	write(t, ws, "4panic")
	readErr(t, ws)
	if r := h.waitClose(t); r != ReasonTransportError {
		t.Errorf("reason %q", r)
	}
	sid := ts.handshake(t)
	if resp, err := http.Post(ts.url+"?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("4panic")); err == nil {
		resp.Body.Close() // net/http aborts the request; either way is fine
	}
	h.waitClose(t)
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("poll after panic: %d", status)
	}
	ws = ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws)
	write(t, ws, "4fine")
	if _, m := read(t, ws); m != "4fine" {
		t.Errorf("echo %q", m)
	}
	ws.CloseNow()
	h.waitClose(t)
}

// TestPollingCloseDeliversQueue: Close on a polling session with no GET
// waiting keeps what it queued, and the close packet, for the next GET,
// instead of dropping the session at once ("Session ID unknown").
func TestPollingCloseDeliversQueue(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	c := <-ts.h.opened
	c.SendText([]byte("4bye"))
	c.Close()
	status, body := ts.poll(t, sid)
	if status != 200 || body != "4bye\x1e1" {
		t.Fatalf("GET after Close: %d %q, want 200 \"4bye\\x1e1\"", status, body)
	}
	if status, _ := ts.poll(t, sid); status != 400 {
		t.Errorf("second GET after Close: %d, want 400", status)
	}
}

// TestFirstPingsSpread: connections opened together are first pinged at
// points spread over PingInterval, so that they are not pinged together for
// as long as they live.
func TestFirstPingsSpread(t *testing.T) {
	ts := newTestServer(t, Config{PingInterval: time.Minute})
	const n = 90 // within recHandler's channels, which Open and Close fill
	before := time.Now()
	conns := make([]*Conn, 0, n)
	for range n {
		ts.handshake(t)
		conns = append(conns, <-ts.h.opened)
	}
	after := time.Now()
	buckets := map[int]bool{} // fifths of what follows the first second
	for _, c := range conns {
		c.mu.Lock()
		at := c.timerAt
		c.mu.Unlock()
		if at.Before(before.Add(time.Second-100*time.Millisecond)) || at.After(after.Add(time.Minute)) { // a slot rounds down by 100 ms at most
			t.Fatalf("first ping due %s after the first connect: not within PingInterval, after its first second", at.Sub(before))
		}
		buckets[int(at.Sub(before.Add(time.Second))/(59*time.Second/5))] = true
	}
	if len(buckets) < 4 {
		t.Fatalf("first pings fall in %d of 5 stretches of PingInterval: not spread", len(buckets))
	}
}

func TestFirstPingDelay(t *testing.T) {
	for _, interval := range []time.Duration{time.Nanosecond, 3 * time.Nanosecond, 50 * time.Millisecond, 25 * time.Second} {
		for range 1000 {
			if d := firstPingDelay(interval); d < min(interval/2, time.Second) || d > interval {
				t.Fatalf("firstPingDelay(%s) = %s", interval, d)
			}
		}
	}
}

// TestPingSlot: first pings are rounded down to slots of a hundredth of the
// interval (100 ms at most) that every connection shares.
func TestPingSlot(t *testing.T) {
	base := time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		interval, offset, want time.Duration
	}{
		{25 * time.Second, 1234 * time.Millisecond, 1200 * time.Millisecond},
		{25 * time.Second, 99 * time.Millisecond, 0},
		{time.Second, 25 * time.Millisecond, 20 * time.Millisecond},
		{50 * time.Nanosecond, 7, 7}, // no slot under a hundredth of a nanosecond
	} {
		if got := pingSlot(base.Add(c.offset), c.interval).Sub(base); got != c.want {
			t.Errorf("pingSlot(+%s, %s) = +%s, want +%s", c.offset, c.interval, got, c.want)
		}
	}
	// The monotonic reading stays, so the heartbeat ignores steps of the
	// wall clock.
	if s := pingSlot(time.Now(), 25*time.Second).String(); !strings.Contains(s, "m=") {
		t.Errorf("pingSlot dropped the monotonic clock reading: %s", s)
	}
}

// TestLargePingCloses: a pong repeats its ping's data, so a client sending
// large pings without reading would make its queue, bounded in packets,
// hold a megabyte a pong. A short ping is answered; a longer one than any
// probe closes the connection, on either transport.
func TestLargePingCloses(t *testing.T) {
	ts := newTestServer(t, Config{})
	big := "2" + strings.Repeat("x", maxPingData+1)

	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws) // open
	write(t, ws, "2hello")
	if _, m := read(t, ws); m != "3hello" {
		t.Fatalf("pong %q, want 3hello", m)
	}
	write(t, ws, big)
	_ = readErr(t, ws)

	sid := ts.handshake(t)
	if status, _ := ts.post(t, sid, big); status != 200 {
		t.Logf("post of the large ping: %d", status)
	}
	waitFor(t, func() bool { status, _ := ts.poll(t, sid); return status != 200 })
}

// TestMaxSessions: past MaxSessions a handshake is refused, 503 on polling
// and a close "try again later" on WebSocket, until a session ends.
func TestMaxSessions(t *testing.T) {
	ts := newTestServer(t, Config{MaxSessions: 2})
	first := ts.handshake(t)
	ts.handshake(t)
	if status, body, _ := do(t, "GET", ts.url+"?EIO=4&transport=polling", ""); status != http.StatusServiceUnavailable || !strings.Contains(body, "Too many sessions") {
		t.Fatalf("third handshake: %d %q, want 503 Too many sessions", status, body)
	}
	ws := ts.dial(t, "EIO=4&transport=websocket")
	if err := readErr(t, ws); websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Fatalf("WebSocket handshake past the bound: %v, want close %v", err, websocket.StatusTryAgainLater)
	}
	if status, _ := ts.post(t, first, "1"); status != 200 {
		t.Fatalf("close of the first session: %d", status)
	}
	ts.poll(t, first) // a closed session lingers for its client's next GET
	waitFor(t, func() bool { return ts.Len() < 2 })
	ts.handshake(t)
}
