package sioclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Options configure Dial.
type Options struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:3000; the path
	// /socket.io/ is added.
	URL string
	// Token is sent as auth.token in the CONNECT packet.
	Token string
	// ReadyEvent, if set, is an event the server sends once the socket's
	// rooms are joined; Dial returns after it instead of after the CONNECT
	// reply. (The Node reference joins rooms after an asynchronous query.)
	ReadyEvent string
	// HTTPClient dials; nil means http.DefaultClient. Give one whose
	// transport binds a local address to use several source addresses.
	HTTPClient *http.Client
	// Timeout bounds the whole handshake; default 30s.
	Timeout time.Duration
}

// ErrRefused is a CONNECT_ERROR reply; the error text carries its message.
var ErrRefused = errors.New("connect refused")

// Conn is one connected Socket.IO socket on namespace "/".
type Conn struct {
	ws        *websocket.Conn
	closeOnce sync.Once
	closed    atomic.Bool
	buf       []byte
	// early holds frames that arrived during the handshake after the
	// CONNECT reply (events published before ReadyEvent), given to Run's
	// handler first.
	early [][]byte
}

// Dial opens a WebSocket session, connects to namespace "/" and waits for
// the CONNECT reply (and ReadyEvent, if set).
func Dial(ctx context.Context, o Options) (*Conn, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	u := strings.TrimRight(o.URL, "/") + "/socket.io/?EIO=4&transport=websocket"
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: o.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", o.URL, err)
	}
	ws.SetReadLimit(1 << 20)
	c := &Conn{ws: ws, buf: make([]byte, 0, 512)}
	// The handshake reads with ctx; Run later reads without a context, which
	// coder/websocket serves without a timer per read.
	stop := context.AfterFunc(ctx, func() { _ = ws.CloseNow() })
	defer stop()
	fail := func(err error) (*Conn, error) {
		_ = ws.CloseNow()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("handshake: %w", ctx.Err())
		}
		return nil, err
	}
	f, err := c.next()
	if err != nil {
		return fail(fmt.Errorf("read open packet: %w", err))
	}
	if len(f) == 0 || f[0] != EngineOpen {
		return fail(fmt.Errorf("expected open packet, got %q", f))
	}
	if err := ws.Write(ctx, websocket.MessageText, AppendConnect(nil, o.Token)); err != nil {
		return fail(fmt.Errorf("send connect: %w", err))
	}
	connected := false
	for {
		f, err := c.next()
		if err != nil {
			return fail(fmt.Errorf("await connect reply: %w", err))
		}
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case EnginePing:
			if err := ws.Write(ctx, websocket.MessageText, []byte{EnginePong}); err != nil {
				return fail(err)
			}
			continue
		case EngineMessage:
		default:
			continue
		}
		p, err := ParseSocket(f[1:])
		if err != nil || len(p.Namespace) > 0 {
			continue
		}
		switch p.Type {
		case SocketConnectError:
			return fail(fmt.Errorf("%w: %s", ErrRefused, p.Data))
		case SocketConnect:
			connected = true
			if o.ReadyEvent == "" {
				return c, nil
			}
		case SocketEvent:
			if !connected {
				continue
			}
			name, _, err := EventName(p.Data)
			if err == nil && string(name) == o.ReadyEvent {
				return c, nil
			}
			c.early = append(c.early, append([]byte(nil), f...))
		}
	}
}

// next reads one text frame into c.buf, reused between calls.
func (c *Conn) next() ([]byte, error) {
	_, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return nil, err
	}
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	c.buf = b
	return b, nil
}

// Handler receives each EVENT packet of namespace "/": the event name and
// the raw JSON arguments after it, both aliasing a reused buffer.
type Handler func(name, args []byte)

// Run reads until the connection ends, answering pings and passing events
// to h. It returns nil after Close, or the error that ended the connection.
func (c *Conn) Run(h Handler) error {
	deliver := func(f []byte) error {
		p, err := ParseSocket(f[1:])
		if err != nil {
			return fmt.Errorf("parse %q: %w", f, err)
		}
		if p.Type != SocketEvent || len(p.Namespace) > 0 {
			if p.Type == SocketDisconnect {
				return errors.New("server disconnected the socket")
			}
			return nil
		}
		name, args, err := EventName(p.Data)
		if err != nil {
			return fmt.Errorf("parse %q: %w", f, err)
		}
		h(name, args)
		return nil
	}
	for _, f := range c.early {
		if err := deliver(f); err != nil {
			return err
		}
	}
	c.early = nil
	for {
		f, err := c.next()
		if err != nil {
			if c.closed.Load() {
				return nil
			}
			return err
		}
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case EnginePing:
			if err := c.ws.Write(context.Background(), websocket.MessageText, []byte{EnginePong}); err != nil {
				return err
			}
		case EngineMessage:
			if err := deliver(f); err != nil {
				return err
			}
		case EngineClose:
			return errors.New("server closed the session")
		}
	}
}

// Close ends the connection at once; Run returns.
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		_ = c.ws.CloseNow()
	})
}

// SourceClient returns an HTTP client whose connections originate from ip
// (e.g. 127.0.0.2), so more than one ephemeral port range is available on
// loopback.
func SourceClient(ip net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, MaxIdleConns: -1}}
}
