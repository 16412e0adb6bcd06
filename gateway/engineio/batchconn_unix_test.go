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

// TestStalledClientHoldsNoWriteSlot: with a single write slot, a client that
// stops reading while a 16 MiB batch is written to it (far more than its
// socket buffers hold) must not keep the slot: another client still gets
// its packets.
func TestStalledClientHoldsNoWriteSlot(t *testing.T) {
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
	time.Sleep(100 * time.Millisecond) // let the write reach the full buffer
	if got := len(ts.writeSlots); got != 0 {
		t.Errorf("%d write slots taken while the only writer waits for its client, want 0", got)
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
