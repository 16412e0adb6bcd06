package engineio

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// rawWebSocket opens a WebSocket by hand, sending extra in the same write as
// the upgrade request, so tests control how bytes share TCP segments.
func rawWebSocket(t *testing.T, ts *testServer, query string, extra []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	u, err := url.Parse(ts.url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET " + u.Path + "?" + query + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", err, resp)
	}
	return c, br
}

// clientFrames encodes text messages as masked client frames (RFC 6455 §5.3).
func clientFrames(msgs ...string) []byte {
	var b []byte
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, m := range msgs {
		b = append(b, 0x81, 0x80|byte(len(m))) // short messages only
		b = append(b, key[:]...)
		for i := range len(m) {
			b = append(b, m[i]^key[i%4])
		}
	}
	return b
}

// readServerText reads one unmasked server frame of under 64 KiB.
func readServerText(t *testing.T, c net.Conn, br *bufio.Reader) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// TestFramesPipelinedBehindUpgrade: a client that sends frames right behind
// "5", in the same segment (as engine.io-client does, flushing its buffer
// when the upgrade completes), gets them read at once: they are already in
// the reader the probe used, where the poller cannot see them.
func TestFramesPipelinedBehindUpgrade(t *testing.T) {
	ts := newTestServer(t, Config{})
	sid := ts.handshake(t)
	c, br := rawWebSocket(t, ts, "EIO=4&transport=websocket&sid="+sid, nil)
	if _, err := c.Write(clientFrames("2probe")); err != nil {
		t.Fatal(err)
	}
	if m := readServerText(t, c, br); m != "3probe" {
		t.Fatalf("probe answer %q", m)
	}
	ts.poll(t, sid) // the noop that pauses polling
	if _, err := c.Write(clientFrames("5", "4one", "4two")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"4one", "4two"} {
		if m := readServerText(t, c, br); m != want {
			t.Fatalf("echo %q, want %q", m, want)
		}
	}
	// The poller has taken over: later messages are read too.
	if _, err := c.Write(clientFrames("4three")); err != nil {
		t.Fatal(err)
	}
	if m := readServerText(t, c, br); m != "4three" {
		t.Fatalf("echo %q after hand-over", m)
	}
}

// TestFramesPipelinedBehindHandshake: frames sent in the same segment as the
// upgrade request stay hidden in coder/websocket's reader; that connection
// keeps a reader goroutine and loses nothing.
func TestFramesPipelinedBehindHandshake(t *testing.T) {
	ts := newTestServer(t, Config{})
	c, br := rawWebSocket(t, ts, "EIO=4&transport=websocket", clientFrames("4early"))
	if m := readServerText(t, c, br); !strings.HasPrefix(m, `0{"sid"`) {
		t.Fatalf("open packet %q", m)
	}
	if m := readServerText(t, c, br); m != "4early" {
		t.Fatalf("echo %q", m)
	}
	if _, err := c.Write(clientFrames("4later")); err != nil {
		t.Fatal(err)
	}
	if m := readServerText(t, c, br); m != "4later" {
		t.Fatalf("echo %q", m)
	}
}

// TestWebSocketMessagesAroundReadBuffer: client messages shorter than,
// as long as and longer than the connection's read buffer, sent back to
// back to an idle (polled) connection, are all read, in order.
func TestWebSocketMessagesAroundReadBuffer(t *testing.T) {
	ts := newTestServer(t, Config{})
	ws := ts.dial(t, "EIO=4&transport=websocket")
	read(t, ws) // the open packet
	sizes := []int{1, connReadBuffer - 10, connReadBuffer - 2, connReadBuffer, connReadBuffer + 1, 3 * connReadBuffer, 5000, 2}
	for round := range 3 {
		var want []string
		for i, n := range sizes {
			m := fmt.Sprintf("4%d-%d-", round, i)
			m += strings.Repeat("x", max(n-len(m), 0))
			write(t, ws, m)
			want = append(want, m)
		}
		for i, m := range want {
			if _, got := read(t, ws); got != m {
				t.Fatalf("round %d message %d (%d bytes): echo %.40q…", round, i, len(m), got)
			}
		}
		time.Sleep(20 * time.Millisecond) // idle again: the poller watches it
	}
}

// TestDoneOnDemand: a WebSocket session makes its done channel only when
// asked; asked before or after the close, it is closed by then.
func TestDoneOnDemand(t *testing.T) {
	ts := newTestServer(t, Config{})
	closedBy := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(2 * time.Second):
			return false
		}
	}
	// Asked first, closed later.
	ws1 := ts.dial(t, "EIO=4&transport=websocket")
	defer ws1.CloseNow()
	c1 := <-ts.h.opened
	c1.mu.Lock()
	made := c1.done != nil
	c1.mu.Unlock()
	if made {
		t.Error("a WebSocket session made its done channel before anyone asked")
	}
	done := c1.Done()
	select {
	case <-done:
		t.Fatal("done before the close")
	default:
	}
	if c1.Done() != done {
		t.Error("Done changed")
	}
	c1.Abort("test")
	if !closedBy(done) {
		t.Error("done not closed by the close")
	}
	// Never asked before the close.
	ws2 := ts.dial(t, "EIO=4&transport=websocket")
	defer ws2.CloseNow()
	c2 := <-ts.h.opened
	c2.Abort("test")
	if !closedBy(c2.Done()) {
		t.Error("Done after the close is not closed")
	}
}
