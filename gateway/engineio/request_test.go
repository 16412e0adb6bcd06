package engineio

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSessionRequest: a session keeps the opening request's header fields
// the application reads (credentials, cookies, origin) and drops those of
// the WebSocket handshake, which every held connection would otherwise pay
// for.
func TestSessionRequest(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hdr := http.Header{"Authorization": {"Bearer abc"}, "Cookie": {"a=1", "b=2"}, "X-Trace": {"t"}}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.url, "http")+"?EIO=4&transport=websocket&token=q",
		&websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	var c *Conn
	select {
	case c = <-ts.h.opened:
	case <-time.After(5 * time.Second):
		t.Fatal("no session opened")
	}
	req := c.Request()
	if got := req.Header.Get("Authorization"); got != "Bearer abc" {
		t.Errorf("Authorization %q", got)
	}
	if got := req.Header.Values("Cookie"); len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
		t.Errorf("Cookie %q", got)
	}
	if req.Header.Get("X-Trace") != "t" {
		t.Errorf("X-Trace dropped: %v", req.Header)
	}
	for _, k := range []string{"Sec-Websocket-Key", "Sec-Websocket-Version", "Upgrade", "Connection"} {
		if _, ok := req.Header[k]; ok {
			t.Errorf("%s kept", k)
		}
	}
	if req.Query.Get("token") != "q" || req.RemoteAddr == "" {
		t.Errorf("query %v, remote %q", req.Query, req.RemoteAddr)
	}
}

// TestSessionRequestPacking: the packed header and query give back exactly
// what the request had, less the handshake's fields, whatever the values
// hold, with each value's order kept.
func TestSessionRequestPacking(t *testing.T) {
	long := strings.Repeat("x", 300) // a length past one varint byte
	r, err := http.NewRequest(http.MethodGet, "http://h/socket.io/?EIO=4&transport=websocket&a=1&a=2&b=%20c", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.RemoteAddr = "127.0.0.1:4000"
	r.Header = http.Header{
		"Cookie":            {"a=1", "", "b=2"},
		"X-Long":            {long},
		"X-Odd":             {"\x00\xff;\"é"},
		"Sec-Websocket-Key": {"k"},
		"Connection":        {"Upgrade"},
	}
	s := newSessionRequest(r)
	got := s.request()
	want := http.Header{"Cookie": {"a=1", "", "b=2"}, "X-Long": {long}, "X-Odd": {"\x00\xff;\"é"}}
	if len(got.Header) != len(want) {
		t.Fatalf("header %q, want %q", got.Header, want)
	}
	for k, vv := range want {
		if g := got.Header[k]; strings.Join(g, "|") != strings.Join(vv, "|") || len(g) != len(vv) {
			t.Errorf("%s: %q, want %q", k, g, vv)
		}
	}
	if q := got.Query; strings.Join(q["a"], ",") != "1,2" || q.Get("b") != " c" || q.Get("EIO") != "4" || len(q) != 4 {
		t.Errorf("query %v", q)
	}
	if got.RemoteAddr != "127.0.0.1:4000" || got.Time.IsZero() {
		t.Errorf("remote %q, time %v", got.RemoteAddr, got.Time)
	}
	got.Header.Set("Cookie", "changed")
	if again := s.request(); again.Header.Values("Cookie")[0] != "a=1" {
		t.Errorf("a caller's change reached the session: %q", again.Header)
	}
	if e := (&sessionRequest{}).request(); len(e.Header) != 0 || len(e.Query) != 0 {
		t.Errorf("empty: %+v", e)
	}
}
