package netlimit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConns is serve's MAX_CONNECTIONS default.
const DefaultMaxConns = 100_000

// Backoff bounds of a failing Accept.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// Config configures a Listener. Zero values are the documented defaults.
type Config struct {
	// MaxConns is how many accepted connections may be open at once
	// (MAX_CONNECTIONS, whose default is DefaultMaxConns). 0 or negative
	// means no limit, as MAX_CONNECTIONS=0 does (accept errors are still
	// backed off).
	MaxConns int
	// Registerer receives the koordi_http_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives a warning per retried accept error; nil discards.
	Logger *slog.Logger
}

// Listener is a net.Listener bounded as the package documentation says.
// Build it with NewListener.
type Listener struct {
	net.Listener
	max int64 // 0: no limit
	log *slog.Logger

	open         atomic.Int64
	refusedN     atomic.Uint64
	refused      prometheus.Counter
	acceptErrors prometheus.Counter
	openGauge    prometheus.GaugeFunc

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: ends a backoff wait
}

// NewListener wraps inner. It fails only if the metrics cannot be
// registered (a second Listener on the same Registerer, for one).
func NewListener(inner net.Listener, cfg Config) (*Listener, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{
		Listener: inner,
		max:      int64(max(cfg.MaxConns, 0)),
		log:      cfg.Logger,
		closed:   make(chan struct{}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_http_connections_refused_total",
			Help: "Connections accepted and reset at once because MAX_CONNECTIONS were open.",
		}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_http_accept_errors_total",
			Help: "Accept errors waited out (out of descriptors or buffers), each before a retry.",
		}),
	}
	l.openGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "koordi_http_connections_open",
		Help: "Accepted connections open, hijacked WebSockets included.",
	}, func() float64 { return float64(l.open.Load()) })
	if reg := cfg.Registerer; reg != nil {
		for _, c := range []prometheus.Collector{l.openGauge, l.refused, l.acceptErrors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("netlimit: register metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Open returns the number of accepted connections open.
func (l *Listener) Open() int { return int(l.open.Load()) }

// Refused returns the number of connections reset for the limit.
func (l *Listener) Refused() uint64 { return l.refusedN.Load() }

// Accept returns the next connection within the limit, waiting out
// retryable errors (see the package documentation).
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !retryable(err) || l.isClosed() {
				return nil, err
			}
			delay = nextDelay(delay)
			l.acceptErrors.Inc()
			l.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			if !l.wait(delay) {
				return nil, fmt.Errorf("netlimit: accept: %w", net.ErrClosed)
			}
			continue
		}
		delay = 0
		if n := l.open.Add(1); l.max > 0 && n > l.max {
			l.open.Add(-1)
			l.refusedN.Add(1)
			l.refused.Inc()
			reset(c)
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// Close closes the listener underneath and ends a backoff wait.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// wait sleeps d; false if Close came first.
func (l *Listener) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.closed:
		return false
	}
}

// nextDelay doubles the backoff from minDelay up to maxDelay.
func nextDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minDelay
	}
	return min(2*d, maxDelay)
}

// retryable reports whether waiting can cure err: descriptors or buffers
// run out and come back; a connection aborted or refused by a firewall
// concerns that connection only.
func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// reset closes c with a reset rather than a FIN: the client learns at once
// and the kernel keeps no TIME_WAIT for a connection that was never served.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// conn frees its slot on the first Close. It forwards what net/http and
// engineio look for on the connection underneath.
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

var errNoDescriptor = errors.New("netlimit: connection has no descriptor")

// SyscallConn exposes the descriptor (engineio polls idle WebSockets on it).
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errNoDescriptor
}

// CloseWrite half-closes, as net/http does before closing after an error.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead half-closes the read side.
func (c *conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// ReadFrom keeps sendfile/splice for what net/http copies to the connection.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}
