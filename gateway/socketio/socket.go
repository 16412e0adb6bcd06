package socketio

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

// ErrNotSent reports that Emit could not queue its packet: the socket has
// ended, or the connection's queue was full (the connection is then closed).
var ErrNotSent = errors.New("socketio: socket ended or send queue full")

// client is the Socket.IO state of one engine connection.
type client struct {
	srv          *Server
	conn         *engineio.Conn
	connectTimer *time.Timer

	mu      sync.Mutex
	sockets []*Socket // one per namespace joined; few, so a slice rather than a map
	value   any       // the handlers' value of the connection (Socket.SetConnValue); guarded by mu
	closing bool      // onClose has begun: a socket detached now does not re-arm connectTimer

	// Binary packet being reassembled; touched only by Message and Close
	// calls, which engineio serialises.
	pending      *Packet
	attachments  [][]byte // nil when discarding (see startBinary)
	received     int      // attachments received, kept or not
	pendingBytes int      // their bytes, counted in srv.attachBytes
	attachTimer  *time.Timer
	// attachGen names the packet the deadline is armed for: the timer,
	// which runs outside the Message order, closes the connection only if
	// that packet is still incomplete.
	attachGen atomic.Uint64
}

// fail closes the connection as a parse error and lets go of what it held.
func (cl *client) fail() {
	cl.dropPending()
	cl.conn.Abort(engineio.ReasonParseError)
}

// startBinary begins reassembling p. Attachments are accepted only once
// the connection has a namespace socket: before CONNECT there is nothing
// to deliver them to, and a hostile client could make the server hold
// them (ten of MaxPayload bytes per packet) until the connect timeout. The
// attachments of a packet that is ignored (for a namespace not joined, as
// by the reference server, or a BINARY_ACK: the server asks for no acks)
// are counted and dropped. They are bounded in bytes and in time.
func (cl *client) startBinary(p Packet) {
	cl.mu.Lock()
	connected := len(cl.sockets) > 0
	cl.mu.Unlock()
	if !connected {
		cl.fail()
		return
	}
	if p.Attachments == 0 {
		cl.dispatch(p, nil)
		return
	}
	cl.pending = &p
	cl.received = 0
	if p.Type == BinaryEvent && cl.socket(p.Namespace) != nil {
		cl.attachments = make([][]byte, 0, p.Attachments)
	}
	gen := cl.attachGen.Add(1)
	cl.attachTimer = time.AfterFunc(cl.srv.cfg.AttachmentTimeout, func() {
		if cl.attachGen.Load() == gen {
			cl.conn.Abort(engineio.ReasonParseError)
		}
	})
}

// addAttachment takes one attachment of the pending packet; the packet
// when it is complete.
func (cl *client) addAttachment(data []byte) (p *Packet, atts [][]byte, complete bool) {
	cl.pendingBytes += len(data)
	cl.srv.attachBytes.Add(int64(len(data)))
	if cl.pendingBytes > cl.srv.cfg.MaxAttachmentBytes {
		cl.fail()
		return nil, nil, false
	}
	cl.received++
	if cl.attachments != nil {
		cl.attachments = append(cl.attachments, data)
	}
	if cl.received < cl.pending.Attachments {
		return nil, nil, false
	}
	p, atts = cl.pending, cl.attachments
	cl.dropPending()
	return p, atts, true
}

// dropPending ends the reassembly in progress, if any: the deadline is
// disarmed and the bytes no longer count.
func (cl *client) dropPending() {
	if cl.pending == nil {
		return
	}
	cl.attachGen.Add(1)
	cl.attachTimer.Stop()
	cl.srv.attachBytes.Add(-int64(cl.pendingBytes))
	cl.pending, cl.attachments, cl.attachTimer = nil, nil, nil
	cl.received, cl.pendingBytes = 0, 0
}

func (cl *client) onConnectTimeout() {
	cl.mu.Lock()
	n := len(cl.sockets)
	cl.mu.Unlock()
	if n == 0 {
		cl.conn.Close()
	}
}

func (cl *client) onMessage(data []byte, binary bool) {
	if binary {
		if cl.pending == nil {
			cl.fail()
			return
		}
		p, atts, complete := cl.addAttachment(data)
		if complete && atts != nil {
			cl.dispatch(*p, atts)
		}
		return
	}
	if cl.pending != nil {
		cl.fail() // text while an attachment was expected
		return
	}
	p, err := DecodePacket(data)
	if err != nil {
		cl.fail()
		return
	}
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		cl.startBinary(p)
		return
	}
	cl.dispatch(p, nil)
}

func (cl *client) socket(namespace string) *Socket {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if i := cl.socketIndexLocked(namespace); i >= 0 {
		return cl.sockets[i]
	}
	return nil
}

func (cl *client) socketIndexLocked(namespace string) int {
	return slices.IndexFunc(cl.sockets, func(s *Socket) bool { return s.nsp == namespace })
}

func (cl *client) dispatch(p Packet, atts [][]byte) {
	switch p.Type {
	case Connect:
		cl.connect(p)
	case Disconnect:
		if s := cl.socket(p.Namespace); s != nil && s.detach() {
			s.h.Disconnected(s, ReasonClientDisconnect)
		}
	case Event, BinaryEvent:
		s := cl.socket(p.Namespace)
		if s == nil {
			return // events for a namespace not joined are ignored, as by the reference server
		}
		if p.Type == BinaryEvent {
			if err := checkPlaceholders(p.Data, len(atts)); err != nil {
				cl.fail()
				return
			}
		}
		args, err := splitArgs(p.Data)
		if err != nil || len(args) == 0 {
			cl.fail()
			return
		}
		name, err := eventName(p.Data)
		if err != nil {
			cl.fail()
			return
		}
		var ack func(args ...any)
		if p.ID >= 0 {
			ack = s.ackFunc(p.ID)
		}
		if bh, ok := s.h.(BinaryEventHandler); ok && p.Type == BinaryEvent {
			bh.BinaryEvent(s, name, args[1:], atts, ack)
			return
		}
		s.h.Event(s, name, args[1:], ack)
	case Ack, BinaryAck:
		// The server asks for no acks, so there is nothing to resolve.
	default: // CONNECT_ERROR is server→client only
		cl.fail()
	}
}

// maxUnknownNamespace bounds the name of an unknown namespace the server
// answers with CONNECT_ERROR; a longer one closes the connection.
const maxUnknownNamespace = 256

func (cl *client) connect(p Packet) {
	h := cl.srv.handler(p.Namespace)
	if h == nil && len(p.Namespace) > maxUnknownNamespace {
		// The refusal names the namespace; a long made-up one would have
		// the server queue its bytes again for every CONNECT.
		cl.fail()
		return
	}
	if h == nil {
		cl.conn.SendText(packetFrame(Packet{Type: ConnectError, Namespace: p.Namespace, ID: -1,
			Data: json.RawMessage(`{"message":"Invalid namespace"}`)}))
		return
	}
	if old := cl.socket(p.Namespace); old != nil && old.detach() {
		// A second CONNECT for a joined namespace starts a new socket.
		old.h.Disconnected(old, ReasonClientDisconnect)
	}
	s := &Socket{cl: cl, id: rand.Text(), nsp: p.Namespace, h: h, done: make(chan struct{})}
	reply, err := h.Connect(s, p.Data)
	if err != nil {
		s.ended.Store(true) // a refused socket never sends
		close(s.done)
		body := struct {
			Message string `json:"message"`
			Data    any    `json:"data,omitempty"`
		}{Message: err.Error()}
		var refusal *ConnectRefusal
		if errors.As(err, &refusal) {
			body.Data = refusal.Data
		}
		msg, merr := json.Marshal(body)
		if merr != nil {
			// Data the handler made that JSON cannot hold: the message alone.
			msg, _ = json.Marshal(struct {
				Message string `json:"message"`
			}{body.Message})
		}
		cl.conn.SendText(packetFrame(Packet{Type: ConnectError, Namespace: p.Namespace, ID: -1, Data: msg}))
		if refusal != nil && refusal.Close {
			cl.conn.Close() // after what is queued: the CONNECT_ERROR goes first
		}
		return
	}
	cl.mu.Lock()
	if i := cl.socketIndexLocked(p.Namespace); i >= 0 {
		cl.sockets[i] = s
	} else {
		cl.sockets = append(cl.sockets, s)
	}
	cl.mu.Unlock()
	cl.connectTimer.Stop()
	data, _ := json.Marshal(struct {
		SID string `json:"sid"`
		PID string `json:"pid,omitempty"`
	}{s.id, reply.PID})
	if !cl.conn.SendText(packetFrame(Packet{Type: Connect, Namespace: p.Namespace, ID: -1, Data: data})) {
		return // the connection closed; onClose ends the socket
	}
	h.Connected(s)
}

// onClose ends every socket of the connection; it runs after the last Message.
func (cl *client) onClose(reason string) {
	cl.dropPending()
	cl.mu.Lock()
	cl.closing = true
	cl.connectTimer.Stop()
	socks := slices.Clone(cl.sockets)
	cl.mu.Unlock()
	for _, s := range socks {
		if s.detach() {
			s.h.Disconnected(s, reason)
		}
	}
}

// Socket is one client's connection to one namespace. Its methods are safe
// for concurrent use.
type Socket struct {
	cl    *client
	id    string
	nsp   string
	h     Handler
	done  chan struct{}
	ended atomic.Bool
	value atomic.Value
}

// detach removes s from its connection and closes Done; true for the one
// caller that ended it, which then runs Disconnected.
func (s *Socket) detach() bool {
	if !s.ended.CompareAndSwap(false, true) {
		return false
	}
	s.cl.mu.Lock()
	if i := slices.Index(s.cl.sockets, s); i >= 0 {
		s.cl.sockets = slices.Delete(s.cl.sockets, i, i+1)
	}
	if len(s.cl.sockets) == 0 && !s.cl.closing {
		// A connection left without a namespace (its client's DISCONNECT,
		// the server's, a refused second CONNECT) holds what one that
		// never joined does, with no token left to expire: it gets the
		// same time to CONNECT again, then closes.
		s.cl.connectTimer.Reset(s.cl.srv.cfg.ConnectTimeout)
	}
	s.cl.mu.Unlock()
	close(s.done)
	return true
}

// ID returns the Socket.IO socket id (the "sid" of the CONNECT reply).
func (s *Socket) ID() string { return s.id }

// Namespace returns the namespace, e.g. "/".
func (s *Socket) Namespace() string { return s.nsp }

// Transport returns the current transport: "polling" or "websocket".
func (s *Socket) Transport() string { return s.cl.conn.Transport() }

// Handshake returns the opening request of the engine connection.
func (s *Socket) Handshake() Handshake {
	r := s.cl.conn.Request()
	return Handshake{Header: r.Header, Query: r.Query, RemoteAddr: r.RemoteAddr, Time: r.Time}
}

// Done is closed when the socket has ended.
func (s *Socket) Done() <-chan struct{} { return s.done }

// Send queues f. It never blocks; false if the socket has ended or the
// connection's queue was full, in which case the connection is closed
// (slow consumer; the client reconnects).
func (s *Socket) Send(f Frame) bool {
	if s.ended.Load() {
		return false
	}
	return s.cl.conn.SendText(f)
}

// OfferFrames queues the packets refs name in sets (event frames shared
// by many sockets) as far as the connection's queue has room, without
// closing it when full, and reports how many; 0 if the socket has ended
// (see engineio.Conn.OfferFrames).
func (s *Socket) OfferFrames(sets []*engineio.Frames, refs []engineio.FrameRef) int {
	if s.ended.Load() {
		return 0
	}
	return s.cl.conn.OfferFrames(sets, refs)
}

// Queued reports how many packets of the connection wait for the wire.
func (s *Socket) Queued() int { return s.cl.conn.Queued() }

// QueueCap is the connection's send queue bound (Config.SendQueue).
func (s *Socket) QueueCap() int { return s.cl.srv.eio.Config().SendQueue }

// Drained signals each time the connection's queue is taken for the wire
// (see engineio.Conn.Drained).
func (s *Socket) Drained() <-chan struct{} { return s.cl.conn.Drained() }

// Emit JSON-encodes args (json.RawMessage verbatim, Binary as attachments)
// and sends the event.
func (s *Socket) Emit(event string, args ...any) error {
	ps, err := encodePacket(Event, s.nsp, -1, []json.RawMessage{appendQuoted(nil, event)}, args)
	if err != nil {
		return err
	}
	if s.ended.Load() || !s.cl.conn.SendPackets(ps...) {
		return ErrNotSent
	}
	return nil
}

func (s *Socket) ackFunc(id int64) func(args ...any) {
	var once atomic.Bool
	return func(args ...any) {
		if !once.CompareAndSwap(false, true) || s.ended.Load() {
			return
		}
		ps, err := encodePacket(Ack, s.nsp, id, nil, args)
		if err != nil {
			s.cl.srv.cfg.Logger.Warn("socket.io ack not sent", s.cl.conn.LogAttr(), "err", err)
			return
		}
		s.cl.conn.SendPackets(ps...)
	}
}

// Disconnect sends a DISCONNECT packet for this namespace and ends the
// socket: Done closes now, Disconnected runs soon after with
// "server namespace disconnect" (after any Event in progress returns).
func (s *Socket) Disconnect() {
	if !s.detach() {
		return
	}
	s.cl.conn.SendText(packetFrame(Packet{Type: Disconnect, Namespace: s.nsp, ID: -1}))
	s.cl.conn.Dispatch(func() { s.h.Disconnected(s, ReasonServerDisconnect) })
}

// CloseTransport closes the whole engine connection after what is queued
// (the client reconnects); every socket on it ends with "forced close".
func (s *Socket) CloseTransport() { s.cl.conn.Close() }

// SetConnValue stores one value of handler-owned data on the engine
// connection: unlike SetValue's, it is shared by every socket the connection
// opens (each namespace, and a new socket after a second CONNECT) and
// outlives them. The gateway keeps the connection's rate budget there.
func (s *Socket) SetConnValue(v any) {
	s.cl.mu.Lock()
	s.cl.value = v
	s.cl.mu.Unlock()
}

// ConnValue returns what SetConnValue stored on the engine connection, or
// nil.
func (s *Socket) ConnValue() any {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	return s.cl.value
}

// SetValue stores one value of handler-owned data.
func (s *Socket) SetValue(v any) { s.value.Store(&v) }

// Value returns what SetValue stored, or nil.
func (s *Socket) Value() any {
	if p, ok := s.value.Load().(*any); ok {
		return *p
	}
	return nil
}
