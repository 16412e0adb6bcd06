package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// Client events and the error codes of their refusals (README: the events).
const (
	EventJoinCalendar  = "join:calendar"
	EventLeaveCalendar = "leave:calendar"
	// EventError is the server event carrying a refusal when the client
	// asked for no ack.
	EventError = "error"

	CodeInvalidCalendarID = "INVALID_CALENDAR_ID"
	CodeForbidden         = "FORBIDDEN"
	CodeRateLimited       = "RATE_LIMITED"
	CodeUnknownEvent      = "UNKNOWN_EVENT"
	// CodeTooManySockets tells a socket it is closed to make room for a
	// newer one of its user (MaxSocketsPerUser).
	CodeTooManySockets = "TOO_MANY_SOCKETS"
)

// Refusal is the body of an error event, and of a refusing ack with OK false.
type Refusal struct {
	OK        bool   `json:"ok"`
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// errorEvent is the error event's payload, {error_code, message}.
type errorEvent struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// Accepted is the ack of a successful join:calendar or leave:calendar.
type Accepted struct {
	OK   bool   `json:"ok"`
	Room string `json:"room"`
}

// handler implements socketio.Handler for the gateway.
type handler Gateway

var _ socketio.Handler = (*handler)(nil)

// connectAuth is the CONNECT auth object: Koordi's token, plus pid and
// offset that socket.io-client adds when it tries to recover.
type connectAuth struct {
	Token  string
	PID    string
	Offset string
}

func parseAuth(raw json.RawMessage) connectAuth {
	var m map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil {
		return connectAuth{}
	}
	str := func(k string) string {
		var s string
		if v, ok := m[k]; ok && json.Unmarshal(v, &s) == nil {
			return s
		}
		return ""
	}
	return connectAuth{Token: str("token"), PID: str("pid"), Offset: str("offset")}
}

// Connect authenticates, reads the user's calendars and decides between a
// recovered and a fresh session.
func (h *handler) Connect(s *socketio.Socket, raw json.RawMessage) (socketio.ConnectReply, error) {
	g := (*Gateway)(h)
	// Before the token is even read: a refused CONNECT costs the same, so a
	// client cannot try tokens, or start fresh sockets, faster than the
	// limit on one connection.
	if err := g.chargeConnect(s); err != nil {
		return socketio.ConnectReply{}, err
	}
	a := parseAuth(raw)
	claims, err := g.verifier.Verify(a.Token)
	if err != nil {
		reason := auth.Reason(err)
		g.metrics.authFailures.WithLabelValues(reason).Inc()
		g.log.Debug("connect refused", "reason", reason, "remote", s.Handshake().RemoteAddr)
		return socketio.ConnectReply{}, errors.New(auth.ClientMessage(err))
	}
	c := &client{conn: s, userID: claims.UserID}
	c.start = g.window.position()
	pidStr := ""
	if a.PID != "" {
		p, err := decodePID(g.pidKey, a.PID)
		pos := p.start
		if off, perr := schema.ParseOffset(a.Offset); perr == nil {
			pos = off
		}
		switch {
		case err == nil && p.userID == claims.UserID && g.window.covers(pos, p.instance == g.instance):
			c.start, pidStr = pos, a.PID
			c.recovered, c.sameProc = true, p.instance == g.instance
			g.metrics.replayHits.Inc()
		default:
			// The client had a session and may have missed events since
			// (its position evicted or before a gap, or a pid this process
			// cannot read, as after a restart with a key of its own): it
			// is told to refetch, whether or not it looks at
			// socket.recovered.
			g.metrics.replayMisses.Inc()
			c.notify = true
			if err == nil && p.userID == claims.UserID && g.window.beforeReset(pos) && g.gapWarned.CompareAndSwap(false, true) {
				g.log.Warn("sessions from before a gap in the stream are reconnecting: changes in between may be lost, clients told to refetch (sync:reset)")
			}
		}
	}
	if pidStr == "" {
		pidStr = encodePID(g.pidKey, pid{instance: g.instance, start: c.start, userID: claims.UserID})
	}
	// The verifier accepts a token until exp + leeway; closing it earlier
	// would only make the client reconnect with a token still accepted.
	c.expiry = time.AfterFunc(claims.ExpiresAt.Add(g.cfg.JWTLeeway).Sub(g.cfg.Now()), func() {
		g.log.Info("token expired: closing socket", "user", claims.UserID)
		s.CloseTransport()
	})
	s.SetValue(c)
	g.log.Debug("socket connected", "user", claims.UserID, "recovered", c.recovered)
	return socketio.ConnectReply{PID: pidStr}, nil
}

// Connected registers the socket with the rooms its user was in at its start
// position and sends it what came after, under the lock Publish holds: the
// recovery of a recovering socket, and for a fresh one what was published
// between its CONNECT and now. So every socket gets each event once, in
// order, exactly if its user was a member of the event's room then. A long
// replay continues at the socket's own pace (see catchUp).
func (h *handler) Connected(s *socketio.Socket) {
	g := (*Gateway)(h)
	c, _ := s.Value().(*client)
	if c == nil {
		return
	}
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	if c.gone {
		return
	}
	switch {
	case c.recovered && !g.window.covers(c.start, c.sameProc), g.window.beforeReset(c.start):
		// Evicted, or a sync:reset came, between Connect and now: the
		// promise cannot be kept, so the client is told to refetch.
		c.notify = true
	case !c.recovered && g.window.lost(c.start):
		// Replay is off, or the gap since the CONNECT was evicted already:
		// the socket starts from now.
		c.start = g.window.position()
	}
	if c.notify {
		c.start = g.window.position()
		// Under pubMu, so no live event slips between: the offset it
		// carries is the client's position from now on.
		c.conn.Send(resetFrame("replay_unavailable", c.start))
	}
	g.limitSockets(c.userID)
	c.rooms = g.roomsAt(c.userID, c.start)
	c.sent = c.start
	c.lagging = true
	g.idx.register(c)
	if g.sendChunk(c) {
		g.idx.setLive(c)
	} else {
		g.startCatchUp(c)
	}
}

// limitSockets makes room for one more socket of user under
// MaxSocketsPerUser: the oldest is told why and disconnected (a server
// DISCONNECT, so its client does not come back). The caller holds idx.mu.
func (g *Gateway) limitSockets(user string) {
	if g.cfg.MaxSocketsPerUser <= 0 {
		return
	}
	// The new socket registers right after, under the same lock: its user
	// keeps its rate budget even when the oldest was the only other socket.
	budget := g.idx.budgets[user]
	defer func() {
		if budget != nil {
			g.idx.budgets[user] = budget
		}
	}()
	for len(g.idx.users[user]) >= g.cfg.MaxSocketsPerUser {
		old := g.idx.oldest(user)
		old.conn.Send(errorFrame(CodeTooManySockets,
			fmt.Sprintf("more than %d sockets of one user: the oldest is closed", g.cfg.MaxSocketsPerUser)))
		old.conn.Disconnect()
		// Disconnected runs later, on the old socket's own path; out of the
		// index now, so the count is right at once.
		g.idx.unregister(old)
		g.log.Info("too many sockets for one user: closed the oldest", "user", user, "limit", g.cfg.MaxSocketsPerUser)
	}
}

func errorFrame(code, msg string) socketio.Frame {
	payload, _ := json.Marshal(errorEvent{ErrorCode: code, Message: msg})
	return socketio.EncodeEvent(Namespace, EventError, payload)
}

// Event handles join:calendar and leave:calendar, after the rate limit.
func (h *handler) Event(s *socketio.Socket, event string, args []json.RawMessage, ack func(args ...any)) {
	g := (*Gateway)(h)
	c, _ := s.Value().(*client)
	if c == nil {
		return
	}
	if !g.allowEvent(s, c) {
		g.metrics.rateLimited.Inc()
		refuse(s, ack, CodeRateLimited, fmt.Sprintf("rate limit exceeded: at most %d events a minute", g.cfg.RateLimit))
		if g.abused(s) {
			g.log.Info("rate limit abuse: disconnecting socket", "user", c.userID)
			// DISCONNECT stops socket.io-client from reconnecting; closing
			// the transport too ends the connection, so a hand-written
			// client pays a new handshake to go on.
			s.Disconnect()
			s.CloseTransport()
		}
		return
	}
	switch event {
	case EventJoinCalendar:
		g.joinCalendar(s, c, args, ack)
	case EventLeaveCalendar:
		id, ok := calendarArg(args)
		if !ok {
			refuse(s, ack, CodeInvalidCalendarID, "calendar id must be a uuid")
			return
		}
		if err := g.moveByClient(c, id, false); err != nil {
			refuse(s, ack, CodeRateLimited, err.Error())
			return
		}
		if ack != nil {
			ack(Accepted{OK: true, Room: schema.CalendarRoom(id)})
		}
	default:
		refuse(s, ack, CodeUnknownEvent, "unknown event")
	}
}

func (g *Gateway) joinCalendar(s *socketio.Socket, c *client, args []json.RawMessage, ack func(args ...any)) {
	id, ok := calendarArg(args)
	if !ok {
		refuse(s, ack, CodeInvalidCalendarID, "calendar id must be a uuid")
		return
	}
	r := schema.CalendarRoom(id)
	switch err := g.moveByClient(c, id, true); {
	case errors.Is(err, errNotMember):
		refuse(s, ack, CodeForbidden, err.Error())
		return
	case err != nil:
		refuse(s, ack, CodeRateLimited, err.Error())
		return
	}
	if ack != nil {
		ack(Accepted{OK: true, Room: r})
	}
}

// moveByClient applies the client's join:calendar (join) or
// leave:calendar of calendar cal; a join only if its user is an accepted
// member (else errNotMember). It takes pubMu, as the stream's moves do:
// frames the socket is owed under its rooms of before (collected in a
// batch, or held while the stream is behind) are queued first, and the
// move falls between two of the stream's transactions, never inside one.
// The membership check and the move are under one lock, the one moves
// take: a removal published a moment earlier has left the view already,
// one published later takes the socket out again.
func (g *Gateway) moveByClient(c *client, cal string, join bool) error {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	if c.pendN > 0 {
		g.flush(&g.held)
	}
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	if join && !g.idx.view.member(c.userID, cal) {
		return errNotMember
	}
	r := schema.CalendarRoom(cal)
	switch {
	case c.gone:
		return nil
	case c.lagging:
		return g.idx.deferMove(c, r, join, g.window.lastSeq())
	}
	// Live with nothing owed: every entry so far was queued to it or not
	// for its rooms, moves after its newest event too. Its cursor goes
	// there, so that a catch-up it may start later walks neither an event
	// from before this move under its new rooms nor a move of the stream
	// from before it (which would undo it).
	if tail := g.window.tailOffset(); tail.Compare(c.sent) > 0 {
		c.sent = tail
	}
	if join {
		g.idx.join(c, r)
	} else {
		g.idx.leave(c, r)
	}
	return nil
}

// calendarArg reads the calendar id argument: a uuid string.
func calendarArg(args []json.RawMessage) (string, bool) {
	if len(args) == 0 {
		return "", false
	}
	var id string
	if json.Unmarshal(args[0], &id) != nil || !schema.IsUUID(id) {
		return "", false
	}
	return strings.ToLower(id), true
}

// refuse answers a refused client event: through its ack when it asked for
// one, else with an error event.
func refuse(s *socketio.Socket, ack func(args ...any), code, msg string) {
	if ack != nil {
		ack(Refusal{OK: false, ErrorCode: code, Message: msg})
		return
	}
	_ = s.Emit(EventError, errorEvent{ErrorCode: code, Message: msg})
}

// Disconnected forgets the socket.
func (h *handler) Disconnected(s *socketio.Socket, reason string) {
	g := (*Gateway)(h)
	c, _ := s.Value().(*client)
	if c == nil {
		return
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if reason == engineio.ReasonSlowConsumer {
		g.metrics.slowDisconnects.Inc()
		g.log.Info("slow consumer disconnected", "user", c.userID)
	}
	g.idx.mu.Lock()
	g.idx.unregister(c)
	g.idx.mu.Unlock()
	g.log.Debug("socket disconnected", "user", c.userID, "reason", reason)
}
