package netlimit_test

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/netlimit"
)

type nopHandler struct{}

func (nopHandler) Open(*engineio.Conn)                  {}
func (nopHandler) Message(*engineio.Conn, []byte, bool) {}
func (nopHandler) Close(*engineio.Conn, string)         {}

// TestEngineIOBehindListener: behind a Listener, idle WebSockets still
// hold no goroutine (engineio's poller reaches the descriptor through the
// wrapped connection), hijacked connections count against the limit, and
// their slots free when they close.
func TestEngineIOBehindListener(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 20
	l, err := netlimit.NewListener(inner, netlimit.Config{MaxConns: limit})
	if err != nil {
		t.Fatal(err)
	}
	eio := engineio.NewServer(engineio.Config{PingInterval: time.Minute, PingTimeout: time.Minute}, nopHandler{})
	hs := &http.Server{Handler: eio, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()
	defer func() {
		_ = eio.Shutdown(context.Background())
		_ = hs.Shutdown(context.Background())
		<-served
	}()

	url := "ws://" + inner.Addr().String() + "/engine.io/?EIO=4&transport=websocket"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := runtime.NumGoroutine()
	var conns []*websocket.Conn
	for range limit {
		ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.Read(ctx); err != nil { // the open packet
			t.Fatal(err)
		}
		conns = append(conns, ws)
	}
	// An idle client holds no goroutine, nor should the server beyond its
	// poller's (a reader per connection would be limit more).
	var held int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		held = runtime.NumGoroutine() - before
		if held <= 3 || time.Now().After(deadline) {
			break
		}
	}
	if held > 3 {
		t.Errorf("%d idle WebSockets hold %d goroutines, want the poller's only", limit, held)
	}
	if n := l.Open(); n != limit {
		t.Errorf("Open() = %d, want %d", n, limit)
	}
	if _, _, err := websocket.Dial(ctx, url, nil); err == nil {
		t.Error("a WebSocket over the limit was opened")
	}
	for _, ws := range conns {
		ws.CloseNow()
	}
	for deadline := time.Now().Add(5 * time.Second); l.Open() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.Open(); n != 0 {
		t.Errorf("Open() = %d after every WebSocket closed", n)
	}
	if n := l.Refused(); n != 1 {
		t.Errorf("Refused() = %d, want 1", n)
	}
}
