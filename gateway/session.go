package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// Client events and the error codes of their refusals (DESIGN.md section 6).
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
	// CodeInternal answers a join:calendar whose membership check failed
	// (the database was unreachable); the client may retry.
	CodeInternal = "INTERNAL_ERROR"
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

// errInternal is the CONNECT refusal when memberships cannot be read; the
// transport is closed first so the client retries rather than giving up.
var errInternal = errors.New("Internal error")

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
	a := parseAuth(raw)
	claims, err := g.verifier.Verify(a.Token)
	if err != nil {
		reason := auth.Reason(err)
		g.metrics.authFailures.WithLabelValues(reason).Inc()
		g.log.Debug("connect refused", "reason", reason, "remote", s.Handshake().RemoteAddr)
		return socketio.ConnectReply{}, errors.New(auth.ClientMessage(err))
	}
	c := &client{conn: s, userID: claims.UserID}
	// Registered before the query, so room changes made meanwhile reach it.
	g.idx.mu.Lock()
	g.idx.register(c)
	g.idx.mu.Unlock()
	cals, err := g.acceptedCalendars(claims.UserID)
	if err != nil {
		g.idx.mu.Lock()
		g.idx.unregister(c)
		g.idx.mu.Unlock()
		g.log.Error("connect: read memberships", "user", claims.UserID, "err", err)
		s.CloseTransport()
		return socketio.ConnectReply{}, errInternal
	}
	c.calendars = cals

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
			g.metrics.replayMisses.Inc()
			c.notify = err == nil && p.userID == claims.UserID && g.window.beforeReset(pos)
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
	g.log.Debug("socket connected", "user", claims.UserID, "recovered", pidStr == a.PID, "calendars", len(cals))
	return socketio.ConnectReply{PID: pidStr}, nil
}

func (g *Gateway) acceptedCalendars(userID string) ([]string, error) {
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.MembershipTimeout)
	defer cancel()
	ids, err := g.cfg.Memberships.AcceptedCalendars(ctx, userID)
	if err != nil {
		return nil, err
	}
	rooms := make([]string, 0, len(ids)+1)
	rooms = append(rooms, schema.UserRoom(userID))
	for _, id := range ids {
		if schema.IsUUID(id) {
			rooms = append(rooms, schema.CalendarRoom(strings.ToLower(id)))
		}
	}
	return rooms, nil
}

// Connected joins the socket's rooms and replays what it missed, under the
// lock Publish holds, so replay and live events neither overlap nor leave a gap.
func (h *handler) Connected(s *socketio.Socket) {
	g := (*Gateway)(h)
	c, _ := s.Value().(*client)
	if c == nil {
		return
	}
	replayed := 0
	g.pubMu.Lock()
	g.idx.mu.Lock()
	if c.recovered && !g.window.covers(c.start, c.sameProc) {
		// Evicted between Connect and now: the promise cannot be kept, so
		// the client is told to refetch.
		c.notify = true
	}
	if g.window.beforeReset(c.start) {
		// A sync:reset came between Connect and now.
		c.notify = true
	}
	// Every socket, fresh or recovered, gets what was published after its
	// start position and before it went live here: for a fresh socket that
	// is what committed between its CONNECT and now, which no live fan-out
	// reached it with (it was not in its rooms yet).
	if g.idx.activate(c, c.calendars) && !c.notify && (c.recovered || g.window.covers(c.start, true)) {
		// One pass, copied out of the window so nothing is sent under its
		// lock; one frame past the limit tells a replay too long for the
		// socket's queue.
		frames := g.window.framesAfter(c.start, g.maxReplay+1, func(e *entry) bool { return c.rooms.has(e.room) })
		if len(frames) > g.maxReplay {
			g.log.Info("replay too long for the socket's queue: client told to refetch", "user", c.userID, "limit", g.maxReplay)
			c.notify = true
		} else {
			for _, f := range frames {
				if !c.conn.Send(f) {
					g.notQueued(c)
					break
				}
				replayed++
			}
		}
	}
	if c.notify {
		// Under pubMu, so no live event slips between: the offset it carries
		// is the client's position from now on.
		c.conn.Send(resetFrame("replay_unavailable", g.window.position()))
	}
	g.idx.mu.Unlock()
	g.pubMu.Unlock()
	if c.recovered {
		g.metrics.replayed.Add(float64(replayed))
	}
	g.metrics.messagesSent.Add(float64(replayed))
}

// Event handles join:calendar and leave:calendar, after the rate limit.
func (h *handler) Event(s *socketio.Socket, event string, args []json.RawMessage, ack func(args ...any)) {
	g := (*Gateway)(h)
	c, _ := s.Value().(*client)
	if c == nil {
		return
	}
	if g.cfg.RateLimit > 0 && c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(float64(g.cfg.RateLimit)/60), g.cfg.RateLimit)
	}
	if c.limiter != nil && !c.limiter.Allow() {
		g.metrics.rateLimited.Inc()
		refuse(s, ack, CodeRateLimited, fmt.Sprintf("rate limit exceeded: at most %d events a minute", g.cfg.RateLimit))
		now := g.cfg.Now()
		if now.Sub(c.abuseSince) > time.Minute {
			c.abuseSince, c.abuseCount = now, 0
		}
		c.abuseCount++
		if c.abuseCount >= g.cfg.AbuseLimit {
			g.log.Info("rate limit abuse: disconnecting socket", "user", c.userID)
			// DISCONNECT stops socket.io-client from reconnecting; closing
			// the transport too makes a hand-written client start over with
			// a new handshake rather than CONNECT again on the same one.
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
		r := schema.CalendarRoom(id)
		g.idx.mu.Lock()
		g.idx.leave(c, r)
		g.idx.mu.Unlock()
		if ack != nil {
			ack(Accepted{OK: true, Room: r})
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
	// A membership removal that lands between the check and the join must
	// win: if the socket left any room meanwhile, check again.
	for attempt := 0; ; attempt++ {
		g.idx.mu.RLock()
		leaves := c.leaves
		g.idx.mu.RUnlock()
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.MembershipTimeout)
		member, err := g.cfg.Memberships.IsAcceptedMember(ctx, c.userID, id)
		cancel()
		if err != nil {
			g.log.Error("join:calendar: check membership", "user", c.userID, "err", err)
			refuse(s, ack, CodeInternal, "membership could not be checked, try again")
			return
		}
		if !member {
			refuse(s, ack, CodeForbidden, "not an accepted member of this calendar")
			return
		}
		g.idx.mu.Lock()
		if c.leaves == leaves {
			g.idx.join(c, r)
			g.idx.mu.Unlock()
			break
		}
		g.idx.mu.Unlock()
		if attempt >= 2 {
			// Memberships keep changing under the check: joining now could
			// let in a socket whose removal just landed. The client retries.
			refuse(s, ack, CodeInternal, "memberships changed while joining, try again")
			return
		}
	}
	if ack != nil {
		ack(Accepted{OK: true, Room: r})
	}
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
