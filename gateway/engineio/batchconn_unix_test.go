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

// dialStalled opens a small-buffer WebSocket (dialSmallBuffer) that reads
// its open packet and then nothing more, and returns the server's side.
func (ts *testServer) dialStalled(t *testing.T) (*websocket.Conn, *Conn) {
	t.Helper()
	ws := ts.dialSmallBuffer(t, "EIO=4&transport=websocket")
	read(t, ws)
	return ws, <-ts.h.opened
}

// queueBinary queues n binary packets of size bytes to c at once.
func queueBinary(t *testing.T, c *Conn, n, size int) []Packet {
	t.Helper()
	data := bytes.Repeat([]byte{'x'}, size)
	batch := make([]Packet, n)
	for i := range batch {
		batch[i] = Packet{Data: data, Binary: true}
	}
	if !c.SendPackets(batch...) {
		t.Fatal("queue refused the batch")
	}
	return batch
}

// waitPoolIdle waits until the pool's writers are idle while c, whose
// client reads nothing, still has packets queued: its own goroutine then
// waits for the client with a batch.
func (ts *testServer) waitPoolIdle(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.writers.mu.Lock()
		running := ts.writers.running
		ts.writers.mu.Unlock()
		if running == 0 && c.Queued() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pool writers running and %d packets queued to a client that reads nothing; want the writers idle beside a queue", running, c.Queued())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStalledClientHoldsNoWriter: with a single writer in the pool, a
// client that stops reading while 16 MiB are queued to it (far more than
// its socket buffers hold) must not keep the writer: another client still
// gets its packets.
func TestStalledClientHoldsNoWriter(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1})
	_, c := ts.dialStalled(t)
	queueBinary(t, c, 64, 256<<10) // 16 MiB at once
	// A turn frames at most turnBytes and writes what the kernel takes;
	// the client's goroutine writes the rest, waiting for it, and the pool's
	// writer must then be free although the connection still has packets.
	ts.waitPoolIdle(t, c)
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

// TestBigQueueLeavesOthersTheirTurn: with a single writer, a connection
// with 250 MiB queued does not keep the writer framing it all before
// anyone else is written to: another client's echo comes back while nearly
// all of it is still queued.
func TestBigQueueLeavesOthersTheirTurn(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1})
	other := ts.dial(t, "EIO=4&transport=websocket")
	read(t, other)
	<-ts.h.opened
	_, c := ts.dialStalled(t)
	batch := queueBinary(t, c, 4000, 64<<10)
	began := time.Now()
	write(t, other, "4ping")
	if _, m := read(t, other); m != "4ping" {
		t.Fatalf("echo %q", m)
	}
	// A turn takes at most turnBytes of the queue (framing the whole of it
	// first took 1–2 s here, ahead of the echo): what the socket buffers
	// took aside, most of it is still queued.
	if c.Queued() < len(batch)/2 {
		t.Fatalf("%d of %d packets left queued when the echo came back: the writer took more than a turn", c.Queued(), len(batch))
	}
	t.Logf("the echo took %s beside a connection with 250 MiB queued", time.Since(began))
	c.Abort(ReasonTransportError)
}

// TestStalledReaderIsClosed: a client that reads nothing but answers every
// ping keeps its heartbeat; its write may wait for it only a heartbeat
// round (PingInterval + PingTimeout), then the connection is closed and its
// queue freed.
func TestStalledReaderIsClosed(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1, PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond})
	stalled, c := ts.dialStalled(t)
	queueBinary(t, c, 64, 256<<10)
	tk := time.NewTicker(50 * time.Millisecond)
	defer tk.Stop()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-tk.C:
			_ = stalled.Write(context.Background(), websocket.MessageText, []byte("3"))
		case <-c.Done():
			return
		case <-deadline:
			t.Fatalf("a client that reads nothing is still connected after 5 s (heartbeat round 300 ms), %d packets queued", c.Queued())
		}
	}
}

// TestStalledFlushBounded: a connection closed with flush while a batch
// waits for a client that reads nothing ends within PingTimeout, not a
// heartbeat round, so Shutdown is not held up by it.
func TestStalledFlushBounded(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1, PingInterval: 5 * time.Second, PingTimeout: 300 * time.Millisecond})
	_, c := ts.dialStalled(t)
	queueBinary(t, c, 64, 256<<10)
	// Until the socket buffers are full and the connection's own goroutine
	// waits for the client with a batch: the pool's writer is then idle.
	ts.waitPoolIdle(t, c)
	c.Close()
	// Within the heartbeat round (5.3 s) it would also end; the flush's
	// bound is 300 ms, the wait here a margin over it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v: the flush to a client that reads nothing is not bounded by PingTimeout", err)
	}
}

// TestPeerCloseWhileWriting: a client that closes while packets are being
// written to it closed the connection (transport close), whichever of the
// reader and the writer notices first.
func TestPeerCloseWhileWriting(t *testing.T) {
	ts := newTestServer(t, Config{ConcurrentWrites: 1})
	for i := range 30 {
		ws := ts.dial(t, "EIO=4&transport=websocket")
		read(t, ws)
		c := <-ts.h.opened
		stop := make(chan struct{})
		data := []*Frames{NewFrames([]Packet{{Data: []byte("4data")}})}
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
					c.OfferFrames(data, []FrameRef{{}})
				}
			}
		}()
		_ = ws.Close(websocket.StatusNormalClosure, "")
		reason := <-ts.h.closed
		close(stop)
		if reason != ReasonTransportClose {
			t.Fatalf("round %d: the client closed, the reason is %q", i, reason)
		}
	}
}
