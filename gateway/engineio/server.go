package engineio

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSendQueue is Config.SendQueue's default.
const DefaultSendQueue = 4096

// Config configures a Server. Zero values are the documented defaults.
type Config struct {
	PingInterval time.Duration // default 25s
	PingTimeout  time.Duration // default 20s
	MaxPayload   int           // bytes of one POST body or WebSocket message; default 1_000_000
	// AllowedOrigins lists the origins ("http://localhost:5173", compared
	// whole and case-insensitively; a trailing slash is ignored) whose pages
	// may connect, on either transport, with credentials. "*" or an empty
	// list allows any origin (the request's Origin is reflected). A request
	// without Origin (not a browser's) is always allowed; any other Origin
	// is refused with 403, including one naming this server's own host:
	// list it, or set AllowSameOrigin.
	AllowedOrigins []string
	// AllowSameOrigin also allows pages served by this server's own scheme
	// and host (a same-origin deployment, or a page this process serves).
	// Same origin means the Origin's scheme and host[:port] equal the
	// request's (default ports aside), where the host is the Host header
	// and the scheme is https when this process terminates TLS, otherwise
	// what X-Forwarded-Proto says if it is exactly one value, "http" or
	// "https", otherwise http. A proxy in front must therefore pass Host
	// and set (not append to) X-Forwarded-Proto; a list of protocols
	// grants nothing. A browser cannot forge either header on a WebSocket,
	// and on a polling request only behind a preflight, which is answered
	// on the headers the proxy sent. Default false.
	AllowSameOrigin bool
	// SendQueue is how many packets may wait per connection before it is
	// closed as a slow consumer; default 4096. It must hold a whole large
	// transaction (an ICS import commits hundreds of events at once, all
	// queued in one go), or every socket of the room is cut by that one
	// burst. The queue grows on demand, so an idle connection pays nothing
	// for the bound, and frames are shared, so a full queue costs about
	// 40 bytes a packet.
	SendQueue int
	// ConcurrentWrites is how many goroutines at most write to WebSocket
	// connections, taking the connections with packets queued in turn
	// (see writerPool). A writer never waits for a client: what a full
	// socket buffer leaves is written by a goroutine of that connection.
	// One writer runs whenever packets wait; more start only while the
	// writers are behind and not coalescing, and leave once turns
	// coalesce again (see writerPool.push).
	// 0: GOMAXPROCS. Below saturation every delivery is a write(2) of its
	// own (a socket gets an event now and then), so writing is nearly all
	// the work and it takes a writer per core to keep up: in an
	// alternating koordi-bench sweep, p99 at 375 commits/s to rooms of 100
	// was 48 and 122 ms with one writer, 13 and 18 ms with two all the
	// time, the raw baseline's 2 and 9 ms; with writers by need, 16 and
	// 12 ms in another. Negative: no bound, and every ready connection may
	// start one.
	ConcurrentWrites int
	// MaxSessions bounds the open sessions, a handshake past it answered
	// 503 (clients retry with backoff). A session costs memory from its
	// handshake on, before any Socket.IO CONNECT or token, and polling
	// sessions share connections, so a bound on connections alone does not
	// bound them: 8 keep-alive connections made 350,000 in 47 s. 0: none.
	MaxSessions int
	Logger      *slog.Logger // nil: discard
}

func (c *Config) setDefaults() {
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 20 * time.Second
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 1_000_000
	}
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.ConcurrentWrites == 0 {
		c.ConcurrentWrites = runtime.GOMAXPROCS(0)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Handler receives the life of each connection.
type Handler interface {
	// Open runs once the session exists, before the handshake answer is
	// written and before any Message.
	Open(c *Conn)
	// Message runs for each message packet, in arrival order. data is the
	// packet's data (without the type byte for text) and may be retained.
	Message(c *Conn, data []byte, binary bool)
	// Close runs once, after the last Message, with the close reason.
	Close(c *Conn, reason string)
}

// Close reasons passed to Handler.Close.
const (
	ReasonTransportClose = "transport close"      // the peer closed or sent a close packet
	ReasonTransportError = "transport error"      // a read or write failed, or polling misuse
	ReasonPingTimeout    = "ping timeout"         // no pong within PingTimeout
	ReasonParseError     = "parse error"          // malformed packet
	ReasonForcedClose    = "forced close"         // Conn.Close
	ReasonShutdown       = "server shutting down" // Server.Shutdown
	ReasonSlowConsumer   = "slow consumer"        // the send queue overflowed
)

// Engine.IO error answers, as the reference server sends them.
const (
	errUnknownTransport = iota
	errUnknownSID
	errBadHandshakeMethod
	errBadRequest
	errForbidden
	errUnsupportedProtocolVersion
)

var errorMessages = [...]string{
	"Transport unknown",
	"Session ID unknown",
	"Bad handshake method",
	"Bad request",
	"Forbidden",
	"Unsupported protocol version",
}

// Server is an Engine.IO v4 endpoint. Mount it at the protocol path (any path:
// the query string carries the protocol).
type Server struct {
	cfg     Config
	h       Handler
	anyOrig bool
	origins []string // allowed origins, without a trailing slash

	wg      tracker // writers, readers, WebSocket handlers, close callbacks, dispatches, the poller
	poll    poller  // WebSocket connections waiting for their client
	writers writerPool

	mu       sync.Mutex
	conns    map[string]*Conn
	shutdown bool
	// fullSaid is when refusals past MaxSessions were last logged (unix
	// nanoseconds): at most once a minute, however many there are.
	fullSaid atomic.Int64
}

// NewServer returns a Server that reports connections to h.
func NewServer(cfg Config, h Handler) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, h: h, conns: make(map[string]*Conn)}
	s.poll.start = s.wg.goFunc
	s.writers = writerPool{max: cfg.ConcurrentWrites, start: s.wg.goFunc}
	if cfg.ConcurrentWrites < 0 {
		s.writers.max, s.writers.eager = math.MaxInt, true
	}
	s.anyOrig = len(cfg.AllowedOrigins) == 0 || slices.Contains(cfg.AllowedOrigins, "*")
	for _, o := range cfg.AllowedOrigins {
		s.origins = append(s.origins, strings.TrimRight(o, "/"))
	}
	return s
}

// Config returns the configuration in effect: NewServer's, defaults
// applied.
func (s *Server) Config() Config { return s.cfg }

// Len returns the number of open sessions.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown closes every connection with [ReasonShutdown] (clients reconnect)
// and refuses new sessions, then waits for the connections' goroutines or ctx.
// It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(ReasonShutdown, true)
	}
	return s.wg.wait(ctx)
}

// tracker counts the goroutines a Server owns. Unlike sync.WaitGroup it may
// be added to while someone waits (a close callback spawned during
// Shutdown), and it refuses new WebSocket handlers once shutdown began.
type tracker struct {
	mu      sync.Mutex
	n       int
	closing bool
	zero    chan struct{} // closed when n drops to 0 while closing
}

// add counts one more goroutine; false once wait has begun (for handlers).
func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

// goFunc runs f on a counted goroutine, also during shutdown (callbacks
// of connections that Shutdown itself closed).
func (t *tracker) goFunc(f func()) {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
	go func() {
		defer t.done()
		f()
	}()
}

// wait marks shutdown and returns when no counted goroutine is left, or ctx ends.
func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	t.closing = true
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	zero := t.zero
	t.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) lookup(sid string) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[sid]
}

func (s *Server) remove(c *Conn) {
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
}

// Why a new session is refused.
var (
	errShuttingDown    = errors.New("server shutting down")
	errTooManySessions = errors.New("too many sessions")
)

// register adds c to the table, unless Shutdown has begun or the table is
// full.
func (s *Server) register(c *Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.shutdown:
		return errShuttingDown
	case s.cfg.MaxSessions > 0 && len(s.conns) >= s.cfg.MaxSessions:
		return errTooManySessions
	}
	s.conns[c.id] = c
	return nil
}

// ServeHTTP implements http.Handler: handshakes, polling requests and
// WebSocket connections.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	originOK := s.originAllowed(r, origin)
	if originOK && origin != "" {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		if !originOK {
			writeError(w, errForbidden)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
			h.Set("Access-Control-Allow-Headers", rh)
		}
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}

	q := r.URL.Query()
	transport := q.Get("transport")
	if transport != "polling" && transport != "websocket" {
		writeError(w, errUnknownTransport)
		return
	}
	isUpgrade := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	if isUpgrade != (transport == "websocket") {
		writeError(w, errBadRequest)
		return
	}
	if !originOK {
		writeError(w, errForbidden)
		return
	}
	sid := q.Get("sid")
	if sid == "" {
		if r.Method != http.MethodGet {
			writeError(w, errBadHandshakeMethod)
			return
		}
		if q.Get("EIO") != "4" {
			writeError(w, errUnsupportedProtocolVersion)
			return
		}
		if isUpgrade {
			s.serveWebSocket(w, r, q, nil)
		} else {
			s.handshakePolling(w, r, q)
		}
		return
	}
	c := s.lookup(sid)
	if c != nil && c.pongOverdue() {
		c.close(ReasonPingTimeout, false)
		c = nil
	}
	if c == nil {
		writeError(w, errUnknownSID)
		return
	}
	if isUpgrade {
		s.serveWebSocket(w, r, q, c)
		return
	}
	switch r.Method {
	case http.MethodGet:
		c.servePoll(w, r)
	case http.MethodPost:
		c.servePost(w, r)
	default:
		writeError(w, errBadRequest)
	}
}

// originAllowed decides for both transports: WebSocket requests reach
// websocket.Accept only once allowed here (its own check would admit any
// Origin naming the Host, whatever the scheme).
func (s *Server) originAllowed(r *http.Request, origin string) bool {
	if origin == "" || s.anyOrig {
		return true
	}
	for _, o := range s.origins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return s.cfg.AllowSameOrigin && sameOrigin(r, origin)
}

// sameOrigin reports whether origin is the request's own scheme and host
// (see Config.AllowSameOrigin).
func sameOrigin(r *http.Request, origin string) bool {
	scheme := requestScheme(r)
	if scheme == "" {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != scheme || u.Host == "" || u.User != nil || u.Opaque != "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	return strings.EqualFold(withoutDefaultPort(u.Host, scheme), withoutDefaultPort(r.Host, scheme))
}

// requestScheme is "https" or "http", or "" when X-Forwarded-Proto is
// ambiguous (several values) or unknown.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https" // what a proxy says cannot change what this connection is
	}
	v := r.Header.Values("X-Forwarded-Proto")
	switch len(v) {
	case 0:
		return "http"
	case 1:
		if p := strings.ToLower(strings.TrimSpace(v[0])); p == "http" || p == "https" {
			return p
		}
	}
	return ""
}

// withoutDefaultPort drops the scheme's default port, which an Origin
// never carries and a Host header may.
func withoutDefaultPort(host, scheme string) string {
	if scheme == "http" {
		return strings.TrimSuffix(host, ":80")
	}
	return strings.TrimSuffix(host, ":443")
}

func writeError(w http.ResponseWriter, code int) {
	status := http.StatusBadRequest
	if code == errForbidden {
		status = http.StatusForbidden
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"code":` + strconv.Itoa(code) + `,"message":"` + errorMessages[code] + `"}`))
}

// newConn creates and registers a session; nil during shutdown.
func (s *Server) newConn(r *http.Request, transport string) (*Conn, error) {
	c := &Conn{
		srv:         s,
		id:          rand.Text(),
		onWebSocket: transport == "websocket",
		req:         newSessionRequest(r),
	}
	if transport == "polling" {
		// Only a polling session waits on wake (its GETs; a WebSocket-born
		// session refuses them) and upgrades; a WebSocket's done channel
		// is made on demand (doneLocked).
		c.wake = make(chan struct{}, 1)
		c.upgraded = make(chan struct{})
		c.done = make(chan struct{}) // its GETs wait on it
	}
	if err := s.register(c); err != nil {
		now, last := time.Now().UnixNano(), s.fullSaid.Load()
		if errors.Is(err, errTooManySessions) && now-last > int64(time.Minute) && s.fullSaid.CompareAndSwap(last, now) {
			s.cfg.Logger.Warn("sessions at their bound: new handshakes refused (503) until some end", "max_sessions", s.cfg.MaxSessions)
		}
		return nil, err
	}
	c.startHeartbeat()
	return c, nil
}

// openPacket is the handshake answer.
func (s *Server) openPacket(sid string, upgrades bool) []byte {
	type open struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int      `json:"maxPayload"`
	}
	o := open{
		SID:          sid,
		Upgrades:     []string{},
		PingInterval: s.cfg.PingInterval.Milliseconds(),
		PingTimeout:  s.cfg.PingTimeout.Milliseconds(),
		MaxPayload:   s.cfg.MaxPayload,
	}
	if upgrades {
		o.Upgrades = []string{"websocket"}
	}
	b, _ := json.Marshal(o) // cannot fail: plain fields
	return append([]byte{TypeOpen}, b...)
}

func (s *Server) handshakePolling(w http.ResponseWriter, r *http.Request, q url.Values) {
	c, err := s.newConn(r, "polling")
	if err != nil {
		writeRefusedSession(w, err)
		return
	}
	s.cfg.Logger.Debug("engine.io session opened", c.LogAttr(), "transport", "polling", "remote", r.RemoteAddr)
	s.h.Open(c)
	writePayload(w, s.openPacket(c.id, true))
}

// writeRefusedSession refuses a new session, during shutdown or past
// MaxSessions; clients retry.
func writeRefusedSession(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	msg := `{"code":3,"message":"Server shutting down"}`
	if errors.Is(err, errTooManySessions) {
		msg = `{"code":3,"message":"Too many sessions"}`
	}
	_, _ = w.Write([]byte(msg))
}

func writePayload(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
