package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/koordi/koordi-realtime/gateway/socketio"
)

// The rate limit (Config.RateLimit) is two token buckets, each of RateLimit
// tokens refilled over a minute. One belongs to the Engine.IO connection
// and is kept on it (socketio's ConnValue), so the sockets a connection
// opens one after another share it: every client event and every Socket.IO
// CONNECT, refused or to another namespace, spends one of its tokens, and a
// client cannot reset its budget by sending CONNECT again. The other
// belongs to the user on this node and is shared by all the user's sockets,
// so opening several sockets does not multiply it; an event needs a token
// of both.
//
// Most sockets send nothing after their CONNECT, so neither bucket exists
// until it is needed: a connection's is made at its second cost, with the
// first CONNECT's token taken then; a user's at the first event of one of
// its sockets, and it is freed with the user's last socket on this node (the
// count is the length of index.users, under index.mu). A user who closes
// every socket and comes back thus starts with a full bucket, but on a new
// connection, whose CONNECT is charged, after a handshake.

// connBudget is the rate budget of one Engine.IO connection. Used only from
// the handler calls of that connection, which the protocol layer
// serialises.
type connBudget struct {
	bucket *rate.Limiter
	// Refusals within a minute; at Config.AbuseLimit the connection is
	// closed.
	abuseSince time.Time
	abuseCount int
}

// connOpened is the connection value of a connection whose only cost so
// far was its first CONNECT: no bucket yet. A zero-size value, so storing
// it allocates nothing.
type connOpened struct{}

func (g *Gateway) newBucket() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(g.cfg.RateLimit)/60), g.cfg.RateLimit)
}

// budget returns the connection's budget, made if it has none yet.
func (g *Gateway) budget(s *socketio.Socket, now time.Time) *connBudget {
	v := s.ConnValue()
	if b, ok := v.(*connBudget); ok {
		return b
	}
	b := &connBudget{bucket: g.newBucket()}
	if _, ok := v.(connOpened); ok {
		// The first CONNECT's token, taken now rather than when it came:
		// at most one token stricter, since the bucket would hold between
		// RateLimit−1 and RateLimit tokens now.
		b.bucket.AllowN(now, 1)
	}
	s.SetConnValue(b)
	return b
}

// rateLimitedData is the CONNECT_ERROR's data of a rate-limited CONNECT,
// socket.io-client's err.data.
type rateLimitedData struct {
	ErrorCode string `json:"error_code"`
}

// chargeConnect spends a token of the connection's budget for a CONNECT; a
// refusal when there is none, which closes the connection once the
// refusals reach AbuseLimit.
func (g *Gateway) chargeConnect(s *socketio.Socket) error {
	if g.cfg.RateLimit <= 0 {
		return nil
	}
	if s.ConnValue() == nil {
		s.SetConnValue(connOpened{}) // RateLimit ≥ 1: the first always passes
		return nil
	}
	now := g.cfg.Now()
	if g.budget(s, now).bucket.AllowN(now, 1) {
		return nil
	}
	g.metrics.rateLimited.Inc()
	refusal := &socketio.ConnectRefusal{
		Message: fmt.Sprintf("rate limit exceeded: at most %d connects and events a minute on one connection", g.cfg.RateLimit),
		Data:    rateLimitedData{ErrorCode: CodeRateLimited},
	}
	if g.abused(s) {
		g.log.Info("rate limit abuse: closing a connection that keeps connecting", "remote", s.Handshake().RemoteAddr)
		refusal.Close = true
	}
	return refusal
}

// allowEvent spends a token of the connection's budget and one of the
// user's for a client event; false if either has none.
func (g *Gateway) allowEvent(s *socketio.Socket, c *client) bool {
	if g.cfg.RateLimit <= 0 {
		return true
	}
	now := g.cfg.Now()
	r := g.budget(s, now).bucket.ReserveN(now, 1)
	if !r.OK() || r.DelayFrom(now) > 0 {
		r.CancelAt(now)
		return false
	}
	if u := g.userBudget(c); u != nil && !u.AllowN(now, 1) {
		// Refused by the user's budget: the connection keeps its token,
		// or the user's other connections would drain this one's too.
		r.CancelAt(now)
		return false
	}
	return true
}

// userBudget returns the bucket c's user shares on this node, made at the
// first event of any of its sockets; nil for a socket no longer registered
// (it is ending; its connection's budget still applies), so no bucket is
// made for a user without sockets.
func (g *Gateway) userBudget(c *client) *rate.Limiter {
	if c.budget != nil {
		return c.budget
	}
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	if !c.live || c.gone {
		return nil
	}
	b := g.idx.budgets[c.userID]
	if b == nil {
		b = g.newBucket()
		g.idx.budgets[c.userID] = b
	}
	c.budget = b
	return b
}

// abused counts a refusal on the connection; true once they reach
// AbuseLimit within a minute.
func (g *Gateway) abused(s *socketio.Socket) bool {
	now := g.cfg.Now()
	b := g.budget(s, now)
	if now.Sub(b.abuseSince) > time.Minute {
		b.abuseSince, b.abuseCount = now, 0
	}
	b.abuseCount++
	return b.abuseCount >= g.cfg.AbuseLimit
}

var errInvalidNamespace = errors.New("Invalid namespace") // the reference server's words

// others serves the CONNECTs to namespaces other than Namespace: refused,
// as they are without it, once charged to the connection's budget.
type others Gateway

func (o *others) Connect(s *socketio.Socket, _ json.RawMessage) (socketio.ConnectReply, error) {
	if err := (*Gateway)(o).chargeConnect(s); err != nil {
		return socketio.ConnectReply{}, err
	}
	return socketio.ConnectReply{}, errInvalidNamespace
}

// Connect refuses every socket, so these never run.
func (o *others) Connected(*socketio.Socket)                                           {}
func (o *others) Event(*socketio.Socket, string, []json.RawMessage, func(args ...any)) {}
func (o *others) Disconnected(*socketio.Socket, string)                                {}
