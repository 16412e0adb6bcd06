package netlimit

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// served accepts from l until it fails, handing each connection over.
func served(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	conns := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return conns
}

// refusedAtOnce reports whether the server closes c without a word.
func refusedAtOnce(t *testing.T, c net.Conn) bool {
	t.Helper()
	if c == nil {
		return true // reset before the dial returned
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// dial connects to l; nil if the server reset the connection so soon that
// the dial itself saw it.
func dial(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recvConn(t *testing.T, conns <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// TestLimit: at most MaxConns accepted connections are open; one more is
// accepted and reset at once (counted), and a slot frees when one closes.
func TestLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	l, err := NewListener(inner, Config{MaxConns: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	conns := served(t, l)
	c1, c2 := dial(t, l), dial(t, l)
	s1, _ := recvConn(t, conns), recvConn(t, conns)
	c3 := dial(t, l)
	if !refusedAtOnce(t, c3) {
		t.Fatal("third connection kept open")
	}
	select {
	case c := <-conns:
		t.Fatalf("third connection handed to the server: %v", c.RemoteAddr())
	default:
	}
	if n := testutil.ToFloat64(l.refused); n != 1 {
		t.Errorf("refused counter %v, want 1", n)
	}
	if got, err := testutil.GatherAndCount(reg, "koordi_http_connections_refused_total", "koordi_http_connections_open"); err != nil || got != 2 {
		t.Errorf("registered series %d (%v), want 2", got, err)
	}
	if n := testutil.ToFloat64(l.openGauge); n != 2 {
		t.Errorf("open gauge %v, want 2", n)
	}
	for _, c := range []net.Conn{c1, c2} {
		if refusedAtOnce(t, c) {
			t.Error("an accepted connection was closed")
		}
	}

	// Closing one (twice: net/http may) frees exactly one slot.
	s1.Close()
	s1.Close()
	if n := l.Open(); n != 1 {
		t.Errorf("Open() = %d after a close, want 1", n)
	}
	dial(t, l)
	recvConn(t, conns)
	if n := testutil.ToFloat64(l.refused); n != 1 {
		t.Errorf("refused counter %v after a slot freed, want 1", n)
	}
	if !refusedAtOnce(t, dial(t, l)) {
		t.Error("connection over the limit kept open")
	}
	if n := l.Refused(); n != 2 {
		t.Errorf("Refused() = %d, want 2", n)
	}
}

// TestConnKeepsDescriptor: the wrapped connection still exposes its
// descriptor (engineio's poller watches idle WebSockets through it) and
// its half-close.
func TestConnKeepsDescriptor(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, Config{})
	if err != nil {
		t.Fatal(err)
	}
	conns := served(t, l)
	c := dial(t, l)
	s := recvConn(t, conns)
	sc, ok := s.(syscall.Conn)
	if !ok {
		t.Fatalf("%T is not a syscall.Conn", s)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Errorf("Control: fd %d, %v", fd, err)
	}
	cw, ok := s.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", s)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("client read after CloseWrite: %v", err)
	}
}

// fakeListener fails every Accept with err (counting calls) until closed,
// or returns conn once after fails failures.
type fakeListener struct {
	err    error
	fails  int64
	calls  atomic.Int64
	conn   net.Conn
	closed chan struct{}
	once   sync.Once
}

func newFake(err error, fails int64, conn net.Conn) *fakeListener {
	return &fakeListener{err: err, fails: fails, conn: conn, closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case <-f.closed:
		return nil, net.ErrClosed
	default:
	}
	if n := f.calls.Add(1); f.conn != nil && n > f.fails {
		c := f.conn
		f.conn = nil
		return c, nil
	}
	if f.conn == nil && f.fails > 0 && f.calls.Load() > f.fails {
		<-f.closed
		return nil, net.ErrClosed
	}
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", f.err)}
}

func (f *fakeListener) Close() error   { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestAcceptBackoff: accept errors that running out of descriptors (or
// buffers) cause are retried after 5 ms, doubling to 1 s, never in a
// spin, and Close ends the wait at once.
func TestAcceptBackoff(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		t.Run(errno.Error(), func(t *testing.T) {
			f := newFake(errno, 0, nil)
			reg := prometheus.NewRegistry()
			l, err := NewListener(f, Config{Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			accepted := make(chan error, 1)
			go func() {
				// What net/http does: accept again at once after an error it
				// does not retry itself.
				for {
					c, err := l.Accept()
					if err == nil {
						c.Close()
						continue
					}
					if errors.Is(err, net.ErrClosed) {
						accepted <- err
						return
					}
				}
			}()
			time.Sleep(400 * time.Millisecond)
			// 5+10+20+40+80+160 ms = 315 ms: about 7 attempts in 400 ms.
			if n := f.calls.Load(); n < 4 || n > 10 {
				t.Errorf("%d Accept calls on the failing listener in 400 ms, want about 7", n)
			}
			start := time.Now()
			l.Close()
			select {
			case <-accepted:
			case <-time.After(time.Second):
				t.Fatal("Accept still waits after Close")
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("Accept returned %v after Close", d)
			}
			if n := testutil.ToFloat64(l.acceptErrors); n != float64(f.calls.Load()) {
				t.Errorf("accept errors counted %v, calls %d", n, f.calls.Load())
			}
		})
	}
}

// TestBackoffCapsAndResets: the delay stops doubling at 1 s, and a
// connection accepted resets it to 5 ms.
func TestBackoffCapsAndResets(t *testing.T) {
	var d time.Duration
	var seen []time.Duration
	for range 10 {
		d = nextDelay(d)
		seen = append(seen, d)
	}
	if seen[0] != 5*time.Millisecond || seen[1] != 10*time.Millisecond || seen[9] != time.Second {
		t.Errorf("delays %v", seen)
	}
	a, b := net.Pipe()
	defer b.Close()
	f := newFake(syscall.EMFILE, 3, a)
	l, err := NewListener(f, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// 5+10+20 ms of backoff before the connection.
	if d := time.Since(start); d < 35*time.Millisecond || d > 500*time.Millisecond {
		t.Errorf("accepted after %v, want about 35ms", d)
	}
}

// TestOtherErrorsReturned: an error that retrying cannot cure is the
// caller's, at once.
func TestOtherErrorsReturned(t *testing.T) {
	f := newFake(syscall.EINVAL, 0, nil)
	l, err := NewListener(f, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Accept(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Accept: %v, want EINVAL", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d calls", n)
	}
}

// TestRegistration: metrics go to the Registerer given, and a second
// Listener on the same one is refused rather than silently unmeasured.
func TestRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	l, err := NewListener(inner, Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	inner2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer inner2.Close()
	if _, err := NewListener(inner2, Config{Registerer: reg}); err == nil {
		t.Error("second registration accepted")
	}
	if _, err := NewListener(inner2, Config{}); err != nil {
		t.Errorf("no registerer: %v", err)
	}
}
