package engineio

import (
	"context"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestIdleWebSocketHoldsNoGoroutine: a WebSocket connection waiting for its
// client keeps no goroutine on the server (the poller watches it, writers run
// only while there is something to write), and still reads, in order, what
// the client sends afterwards.
func TestIdleWebSocketHoldsNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only; elsewhere each connection keeps a reader goroutine")
	}
	ts := newTestServer(t, Config{})
	const n = 50
	before := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = ts.dial(t, "EIO=4&transport=websocket")
		read(t, conns[i]) // the open packet
	}
	held := goroutinesSettle(before)
	// One goroutine for the poller; a writer or a close callback may still
	// be on its way out.
	if held > 3 {
		t.Fatalf("%d idle connections hold %d goroutines", n, held)
	}
	for round := range 3 {
		for i, ws := range conns {
			write(t, ws, fmt.Sprintf("4m%d-%d", i, round))
		}
		for i, ws := range conns {
			if _, m := read(t, ws); m != fmt.Sprintf("4m%d-%d", i, round) {
				t.Fatalf("conn %d round %d: echo %q", i, round, m)
			}
		}
	}
	// Messages that arrive together are read together, in order.
	var burst strings.Builder
	for j := range 20 {
		write(t, conns[0], fmt.Sprintf("4b%d", j))
		fmt.Fprintf(&burst, "4b%d,", j)
	}
	var got strings.Builder
	for range 20 {
		_, m := read(t, conns[0])
		got.WriteString(m + ",")
	}
	if got.String() != burst.String() {
		t.Errorf("burst echoed as %s", got.String())
	}
	if held := goroutinesSettle(before); held > 3 {
		t.Errorf("after reading, %d idle connections hold %d goroutines", n, held)
	}
}

// goroutinesSettle waits briefly for short-lived goroutines to end and
// returns how many more there are than before.
func goroutinesSettle(before int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		held := runtime.NumGoroutine() - before
		if held <= 1 || time.Now().After(deadline) {
			return held
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebSocketOverTLS: a connection the poller cannot watch (TLS keeps its
// own buffer) is read by a goroutine of its own, and works the same.
func TestWebSocketOverTLS(t *testing.T) {
	h := newRecHandler()
	s := NewServer(Config{PingInterval: time.Minute, PingTimeout: time.Minute}, h)
	hs := httptest.NewTLSServer(s)
	defer hs.Close()
	defer s.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(hs.URL, "https")+"/engine.io/?EIO=4&transport=websocket",
		&websocket.DialOptions{HTTPClient: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read(t, ws)
	for j := range 5 {
		write(t, ws, fmt.Sprintf("4tls%d", j))
	}
	for j := range 5 {
		if _, m := read(t, ws); m != fmt.Sprintf("4tls%d", j) {
			t.Fatalf("echo %d: %q", j, m)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
	if r := h.waitClose(t); r != ReasonTransportClose {
		t.Errorf("close reason %q", r)
	}
}
