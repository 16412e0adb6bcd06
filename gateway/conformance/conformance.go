// Package conformance holds the echo handlers the public Engine.IO and
// Socket.IO protocol test suites (socketio/engine.io-protocol and
// socketio/socket.io-protocol, directory test-suite/) expect, so that
// `koordi-realtime conformance` can serve the protocol layer to them.
//
// /engine.io/ echoes every message, binary included. /socket.io/ serves
// namespaces "/" and "/custom": on connect each emits "auth" with the
// handshake auth object; "message" is answered with "message-back" and the
// same arguments; "message-with-ack" is acknowledged with its arguments.
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
)

// Config holds the timings the suites expect; zero values are those timings.
type Config struct {
	PingInterval   time.Duration // default 300ms
	PingTimeout    time.Duration // default 200ms
	ConnectTimeout time.Duration // default 1s
	MaxPayload     int           // default 1_000_000
	// AuthDelay separates the "auth" emit from the CONNECT reply it follows.
	// The suites' client (ws 8.5) dispatches every message of one TCP read
	// synchronously, and the suites attach their next listener only after
	// the previous message resolved a promise, so two messages arriving in
	// one read lose the second. The reference Node server writes them on
	// separate event-loop turns; this delay reproduces that gap. Default
	// 10ms; negative disables it.
	AuthDelay time.Duration
	Logger    *slog.Logger
}

// Server serves both suites' endpoints.
type Server struct {
	mux *http.ServeMux
	eio *engineio.Server
	sio *socketio.Server
}

// New returns the conformance server.
func New(cfg Config) *Server {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 300 * time.Millisecond
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 200 * time.Millisecond
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = time.Second
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 1_000_000
	}
	if cfg.AuthDelay == 0 {
		cfg.AuthDelay = 10 * time.Millisecond
	}
	s := &Server{mux: http.NewServeMux()}
	// The suites' pages are served from anywhere: any origin is allowed.
	eng := engineio.Config{
		PingInterval:   cfg.PingInterval,
		PingTimeout:    cfg.PingTimeout,
		MaxPayload:     cfg.MaxPayload,
		AllowedOrigins: []string{"*"},
		Logger:         cfg.Logger,
	}
	s.eio = engineio.NewServer(eng, engineEcho{})
	s.sio = socketio.NewServer(socketio.Config{Config: eng, ConnectTimeout: cfg.ConnectTimeout})
	echo := Echo{AuthDelay: max(cfg.AuthDelay, 0)}
	s.sio.Handle("/", echo)
	s.sio.Handle("/custom", echo)
	s.mux.Handle("/engine.io/", s.eio)
	s.mux.Handle("/socket.io/", s.sio)
	return s
}

// ServeHTTP serves /engine.io/ and /socket.io/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Shutdown closes every connection of both endpoints.
func (s *Server) Shutdown(ctx context.Context) error {
	return errors.Join(s.eio.Shutdown(ctx), s.sio.Shutdown(ctx))
}

// engineEcho sends every Engine.IO message back as it came.
type engineEcho struct{}

func (engineEcho) Open(*engineio.Conn) {}

func (engineEcho) Message(c *engineio.Conn, data []byte, binary bool) {
	if binary {
		c.SendPackets(engineio.Packet{Data: data, Binary: true})
		return
	}
	c.SendText(append([]byte{engineio.TypeMessage}, data...))
}

func (engineEcho) Close(*engineio.Conn, string) {}

// Echo is the Socket.IO handler of the suites.
type Echo struct {
	AuthDelay time.Duration // see Config.AuthDelay
}

var emptyObject = json.RawMessage(`{}`)

// Connect accepts every client and keeps its auth object for Connected.
func (Echo) Connect(s *socketio.Socket, auth json.RawMessage) (socketio.ConnectReply, error) {
	s.SetValue(auth)
	return socketio.ConnectReply{}, nil
}

// Connected emits "auth" with the handshake auth object ({} when absent).
func (e Echo) Connected(s *socketio.Socket) {
	auth, _ := s.Value().(json.RawMessage)
	if auth == nil {
		auth = emptyObject
	}
	if e.AuthDelay <= 0 {
		_ = s.Emit("auth", auth)
		return
	}
	t := time.AfterFunc(e.AuthDelay, func() { _ = s.Emit("auth", auth) })
	s.SetValue(t) // Disconnected stops it
}

// Event echoes "message" and acknowledges "message-with-ack".
func (e Echo) Event(s *socketio.Socket, event string, args []json.RawMessage, ack func(args ...any)) {
	e.BinaryEvent(s, event, args, nil, ack)
}

// BinaryEvent is Event with binary attachments, which are echoed in place.
func (Echo) BinaryEvent(s *socketio.Socket, event string, args []json.RawMessage, atts [][]byte, ack func(args ...any)) {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		if n, ok := socketio.PlaceholderNum(a); ok && n < len(atts) {
			out[i] = socketio.Binary(atts[n])
		}
	}
	switch event {
	case "message":
		_ = s.Emit("message-back", out...)
	case "message-with-ack":
		if ack != nil {
			ack(out...)
		}
	}
}

// Disconnected stops a pending "auth" emit.
func (Echo) Disconnected(s *socketio.Socket, _ string) {
	if t, ok := s.Value().(*time.Timer); ok {
		t.Stop()
	}
}
