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
