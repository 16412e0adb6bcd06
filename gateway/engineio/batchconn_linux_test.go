//go:build linux

package engineio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	return client, server
}

// TestClosedNumberIsNotWritten: the pool writes on a descriptor's number,
// which the kernel gives the next descriptor once it is closed (POSIX: the
// lowest free one). A write of a closed batchConn must fail rather than
// land in the connection that got the number.
func TestClosedNumberIsNotWritten(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, server := tcpPair(t)
	bc := newBatchConn(server)
	if bc.fd < 0 {
		t.Fatal("a TCP connection has a descriptor")
	}
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	// Open connections until one end gets the closed number (lower free
	// numbers go first).
	var heir, peer net.Conn
	for i := 0; i < 20 && heir == nil; i++ {
		dialled, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		accepted, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = dialled.Close(), accepted.Close() })
		switch bc.fd {
		case descriptor(mustRaw(t, dialled)):
			heir, peer = dialled, accepted
		case descriptor(mustRaw(t, accepted)):
			heir, peer = accepted, dialled
		}
	}
	if heir == nil {
		t.Fatal("the closed descriptor's number went to none of 40 new descriptors; cannot check")
	}
	bc.mu.Lock()
	n, werr := bc.writeNowLocked([]byte("not for you"))
	bc.mu.Unlock()
	_ = heir.Close() // the peer reads what was written, then EOF
	got, _ := io.ReadAll(peer)
	if n != 0 || werr == nil || len(got) > 0 {
		t.Fatalf("write of a closed connection: %d bytes, %v, its number's new connection received %q; want nothing written and an error", n, werr, got)
	}
}

func mustRaw(t testing.TB, c net.Conn) syscall.RawConn {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// smallBuffers fixes both socket buffers of c at 64 KiB (no autotuning), so
// a write of a few megabytes to a peer that reads nothing waits.
func smallBuffers(t *testing.T, c net.Conn) {
	t.Helper()
	tc := c.(*net.TCPConn)
	if err := tc.SetWriteBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if err := tc.SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWaitsForWriter: while a write holds mu, it may be on the
// descriptor's number; Close must not close it (and let the kernel hand the
// number on) until the write lets mu go.
func TestCloseWaitsForWriter(t *testing.T) {
	_, server := tcpPair(t)
	bc := newBatchConn(server)
	bc.mu.Lock() // a pool writer between its check of closing and its write(2)
	closed := make(chan error, 1)
	go func() { closed <- bc.Close() }()
	for !bc.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned while a writer held mu")
	default:
	}
	if _, err := unix.FcntlInt(uintptr(bc.fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the descriptor was closed under a writer holding mu: %v", err)
	}
	bc.mu.Unlock()
	waitClosed(t, closed, "Close did not return once mu was free")
}

// waitClosed waits for Close's result on closed, failing with stuck if it
// takes longer than 5 s.
func waitClosed(t *testing.T, closed <-chan error, stuck string) {
	t.Helper()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(stuck)
	}
}

// TestCloseEndsBlockedWrite: a write blocked under mu for a client that
// stopped reading (the rest of a batch, a control frame) must not keep
// Close waiting for mu: Close ends it with a deadline in the past, again if
// the writer sets one of its own meanwhile (as writeRest does).
func TestCloseEndsBlockedWrite(t *testing.T) {
	for _, name := range []string{"blocked", "deadline reset"} {
		t.Run(name, func(t *testing.T) {
			client, server := tcpPair(t)
			smallBuffers(t, client)
			smallBuffers(t, server)
			bc := newBatchConn(server)
			blocked := make(chan error, 1)
			go func() {
				bc.mu.Lock()
				defer bc.mu.Unlock()
				if name == "deadline reset" {
					// The writer's own deadline, set after Close began.
					for !bc.closing.Load() {
						time.Sleep(time.Millisecond)
					}
					_ = bc.Conn.SetWriteDeadline(time.Now().Add(time.Hour))
				}
				_, err := bc.Conn.Write(make([]byte, 8<<20)) // far more than the buffers hold
				blocked <- err
			}()
			if name == "blocked" {
				// Wait until the write has filled the buffers and waits.
				waitSendQueue(t, bc.fd)
			} else {
				for bc.mu.TryLock() {
					bc.mu.Unlock()
					time.Sleep(time.Millisecond)
				}
			}
			closed := make(chan error, 1)
			go func() { closed <- bc.Close() }()
			waitClosed(t, closed, "Close waited for a write blocked on a client that reads nothing")
			if err := <-blocked; !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the blocked write ended with %v; want the deadline Close set", err)
			}
			if _, err := bc.Write([]byte{0x81, 0}); err == nil {
				t.Fatal("a write after Close succeeded")
			}
		})
	}
}

// waitSendQueue waits until fd's send queue holds bytes its peer has not
// read (SIOCOUTQ), so a write on it is waiting for the peer.
func waitSendQueue(t *testing.T, fd int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			time.Sleep(10 * time.Millisecond) // and the writer to park
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the write never filled the send queue")
		}
		time.Sleep(time.Millisecond)
	}
}
