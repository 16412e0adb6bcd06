//go:build unix

package engineio

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// dialSmallBuffer opens a WebSocket whose socket receives into a 64 KiB
// buffer: a fixed SO_RCVBUF turns off the kernel's autotuning, which on
// loopback would otherwise take tens of megabytes before a writer waits.
func (ts *testServer) dialSmallBuffer(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.url, "http")+"?"+query, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

// TestStalledClientHoldsNoWriter: with a single writer in the pool, a
// client that stops reading while a 16 MiB batch is written to it (far more
// than its socket buffers hold) must not keep the writer: another client
// still gets its packets.
func TestStalledClientHoldsNoWriter(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1})
	stalled := ts.dialSmallBuffer(t, "EIO=4&transport=websocket")
	read(t, stalled) // the open packet; then it reads nothing more
	c := <-ts.h.opened
	big := bytes.Repeat([]byte{'x'}, 256<<10)
	batch := make([]Packet, 64) // queued at once, so one write takes it all
	for i := range batch {
		batch[i] = Packet{Data: big, Binary: true}
	}
	if !c.SendPackets(batch...) {
		t.Fatal("queue refused the batch")
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Queued() > 0 { // the writer took the batch and is writing it
		if time.Now().After(deadline) {
			t.Fatal("the writer never took the batch")
		}
		time.Sleep(time.Millisecond)
	}
	// The batch is framed, then written until the client's buffers are
	// full; then the pool's writer must be free.
	for {
		ts.writers.mu.Lock()
		running := ts.writers.running
		ts.writers.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pool writers still running while the only busy connection waits for its client, want 0", running)
		}
		time.Sleep(time.Millisecond)
	}
	other := ts.dial(t, "EIO=4&transport=websocket")
	if _, open := read(t, other); !strings.HasPrefix(open, "0{") {
		t.Fatalf("the other client got %q, want its open packet", open)
	}
	write(t, other, "4hello")
	if _, m := read(t, other); m != "4hello" {
		t.Fatalf("echo %q", m)
	}
}

// TestWriterDoesNotWaitBehindControlFrame: with a single writer in the
// pool, a connection whose write side coder/websocket holds (a control
// frame to a client that stopped reading) must not keep the writer: another
// client still gets its packets, and the held connection gets its own once
// the control frame is out.
func TestWriterDoesNotWaitBehindControlFrame(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1})
	held := ts.dial(t, "EIO=4&transport=websocket")
	read(t, held)
	c := <-ts.h.opened
	c.mu.Lock()
	bc := c.bc
	c.mu.Unlock()
	bc.mu.Lock() // as coder/websocket holds it while a control frame waits
	if !c.SendText([]byte("4held")) {
		t.Fatal("queue refused the packet")
	}
	other := ts.dial(t, "EIO=4&transport=websocket")
	if _, open := read(t, other); !strings.HasPrefix(open, "0{") {
		t.Fatalf("the other client got %q, want its open packet", open)
	}
	bc.mu.Unlock()
	if _, m := read(t, held); m != "4held" {
		t.Fatalf("held client got %q, want 4held", m)
	}
}
