package socketio

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

// Config configures a Server. Zero values are the documented defaults.
type Config struct {
	// Config holds the Engine.IO settings, with engineio's defaults:
	// heartbeat (25s/20s), MaxPayload (1,000,000 bytes), AllowedOrigins and
	// AllowSameOrigin, SendQueue (4096 frames per connection) and Logger.
	engineio.Config

	// ConnectTimeout closes an engine connection that joins no namespace
	// in this time. Default 45s.
	ConnectTimeout time.Duration
	// MaxAttachmentBytes bounds the binary attachments one connection may
	// hold while their packet is incomplete; a packet whose attachments
	// exceed it closes the connection ("parse error"). Default: MaxPayload
	// (in effect), so a connection holds at most about two messages' worth.
	MaxAttachmentBytes int
	// AttachmentTimeout bounds the time from a binary packet's header to
	// its last attachment; a packet not complete by then closes the
	// connection ("parse error"). Default: PingTimeout (in effect, 20s).
	AttachmentTimeout time.Duration
}

// Handler serves one namespace. See the package documentation for when and
// on which goroutine each method runs.
type Handler interface {
	// Connect runs for a namespace CONNECT packet; auth is the raw JSON auth
	// object (nil if absent). Returning an error refuses: CONNECT_ERROR
	// {"message": err.Error()} (the message is client-visible), with more
	// when the error is a [*ConnectRefusal]. reply.PID, when non-empty, is
	// added as "pid" to the CONNECT reply.
	Connect(s *Socket, auth json.RawMessage) (reply ConnectReply, err error)
	// Connected runs right after the CONNECT reply is queued: frames sent
	// from here on follow it.
	Connected(s *Socket)
	// Event runs for EVENT/BINARY_EVENT packets, in arrival order per socket.
	// ack is nil when the client asked for no ack; calling it (once; later
	// calls do nothing) sends ACK with args.
	Event(s *Socket, event string, args []json.RawMessage, ack func(args ...any))
	// Disconnected runs once when the namespace socket ends, with a
	// Socket.IO reason string.
	Disconnected(s *Socket, reason string)
}

// BinaryEventHandler is implemented by a Handler that wants the binary
// attachments of BINARY_EVENT packets. Without it, Event receives such
// packets with their placeholders ({"_placeholder":true,"num":n}) in args
// and the attachments are dropped.
type BinaryEventHandler interface {
	BinaryEvent(s *Socket, event string, args []json.RawMessage, attachments [][]byte, ack func(args ...any))
}

// ConnectReply is what Handler.Connect adds to the CONNECT reply.
type ConnectReply struct{ PID string }

// ConnectRefusal is an error Handler.Connect returns to refuse with more
// than a message.
type ConnectRefusal struct {
	// Message is the CONNECT_ERROR's "message".
	Message string
	// Data, when not nil, is its "data": socket.io-client hands it to
	// connect_error listeners as err.data, as it does a reference server
	// middleware's error data, so a client can tell refusals apart without
	// parsing messages.
	Data any
	// Close closes the engine connection once the CONNECT_ERROR is
	// written: for a client that keeps sending CONNECTs on one connection.
	Close bool
}

func (r *ConnectRefusal) Error() string { return r.Message }

// Handshake describes the HTTP request that opened the engine connection.
type Handshake struct {
	Header     http.Header
	Query      url.Values
	RemoteAddr string
	Time       time.Time
}

// Disconnect reasons passed to Handler.Disconnected, besides the Engine.IO
// close reasons ("transport close", "transport error", "ping timeout",
// "parse error", "forced close", "server shutting down", "slow consumer").
const (
	ReasonClientDisconnect = "client namespace disconnect"
	ReasonServerDisconnect = "server namespace disconnect"
)

// Server is a Socket.IO v5 server over Engine.IO v4.
type Server struct {
	cfg Config
	eio *engineio.Server

	mu       sync.RWMutex
	handlers map[string]Handler
	others   Handler // see HandleOthers

	attachBytes atomic.Int64 // see PendingAttachmentBytes

	onOpen func(*client) // test hook
}

// NewServer returns a Server with no namespaces; add them with Handle.
func NewServer(cfg Config) *Server {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 45 * time.Second
	}
	s := &Server{handlers: make(map[string]Handler)}
	s.eio = engineio.NewServer(cfg.Config, (*engineHandler)(s))
	cfg.Config = s.eio.Config() // engineio's defaults, which this layer's follow
	if cfg.MaxAttachmentBytes <= 0 {
		cfg.MaxAttachmentBytes = cfg.MaxPayload
	}
	if cfg.AttachmentTimeout <= 0 {
		cfg.AttachmentTimeout = cfg.PingTimeout
	}
	s.cfg = cfg
	return s
}

// Config returns the configuration in effect: NewServer's, defaults
// applied (engineio's included).
func (s *Server) Config() Config { return s.cfg }

// Handle serves namespace (e.g. "/", "/custom") with h. Call it before
// serving; a later call for the same namespace replaces the handler.
func (s *Server) Handle(namespace string, h Handler) {
	if namespace == "" {
		namespace = "/"
	}
	s.mu.Lock()
	s.handlers[namespace] = h
	s.mu.Unlock()
}

// HandleOthers serves the CONNECTs to every namespace without a handler of
// its own with h, which may refuse them (they are refused with "Invalid
// namespace" while there is none) or accept them: a socket then lives in
// that namespace with h, as one of a dynamic namespace of the reference
// server. Call it before serving.
func (s *Server) HandleOthers(h Handler) {
	s.mu.Lock()
	s.others = h
	s.mu.Unlock()
}

func (s *Server) handler(namespace string) Handler {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h, ok := s.handlers[namespace]; ok {
		return h
	}
	return s.others
}

// ServeHTTP serves the Engine.IO endpoint; mount it at /socket.io/ (any
// path works: the protocol is in the query string).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.eio.ServeHTTP(w, r) }

// Shutdown closes every connection with reason "server shutting down" (a
// transport close: clients reconnect) and waits for their goroutines, or ctx.
// It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error { return s.eio.Shutdown(ctx) }

// Conns returns the number of open engine connections.
func (s *Server) Conns() int { return s.eio.Len() }

// PendingAttachmentBytes returns the bytes of binary attachments held, over
// all connections, for packets not yet complete: what hostile clients can
// make the server keep, at most Conns × MaxAttachmentBytes.
func (s *Server) PendingAttachmentBytes() int64 { return s.attachBytes.Load() }

// engineHandler adapts the Server to engineio.Handler.
type engineHandler Server

func (e *engineHandler) Open(c *engineio.Conn) {
	s := (*Server)(e)
	cl := &client{srv: s, conn: c}
	c.SetValue(cl)
	cl.connectTimer = time.AfterFunc(s.cfg.ConnectTimeout, cl.onConnectTimeout)
	if s.onOpen != nil {
		s.onOpen(cl)
	}
}

func (e *engineHandler) Message(c *engineio.Conn, data []byte, binary bool) {
	if cl, ok := c.Value().(*client); ok {
		cl.onMessage(data, binary)
	}
}

func (e *engineHandler) Close(c *engineio.Conn, reason string) {
	if cl, ok := c.Value().(*client); ok {
		cl.onClose(reason)
	}
}
