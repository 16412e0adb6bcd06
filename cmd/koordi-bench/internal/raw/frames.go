package raw

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"strconv"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

// Plan is one run of raw's schedule, the in-memory equivalent of what the
// bench's SQL writers do for the other servers.
type Plan struct {
	// Calendars and EventsPerCalendar are the seeded topology
	// (harness.Topology): rooms, and the event ids the frames name.
	Calendars         int `json:"calendars"`
	EventsPerCalendar int `json:"events_per_calendar"`
	// Backlog > 0: fan-out, that many transactions each updating one event
	// in every calendar, all due at once. Otherwise Rate commits per second
	// for Duration, each updating one event of one calendar.
	Backlog  int           `json:"backlog,omitempty"`
	Rate     int           `json:"rate,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
}

// Validate reports a plan no server can run.
func (p Plan) Validate() error {
	switch {
	case p.Calendars < 1:
		return errors.New("plan: calendars < 1")
	case p.EventsPerCalendar < 1 || p.EventsPerCalendar > 0xffff:
		return errors.New("plan: events per calendar out of range")
	case p.Backlog < 0:
		return errors.New("plan: negative backlog")
	case p.Backlog == 0 && (p.Rate < 1 || p.Duration <= 0):
		return errors.New("plan: neither a backlog nor a rate and duration")
	}
	return nil
}

// Commits is the number of commits of a rate plan, as the SQL writer
// (scenario.writeRate) computes it.
func (p Plan) Commits() int64 { return int64(float64(p.Rate) * p.Duration.Seconds()) }

// Interval is the time between two scheduled commits, as writeRate has it.
func (p Plan) Interval() time.Duration { return time.Second / time.Duration(p.Rate) }

// Commit is rate commit k's calendar and event (writeRate's choice).
func (p Plan) Commit(k int64) (cal, event int) {
	return int(k % int64(p.Calendars)), int(k/int64(p.Calendars)) % p.EventsPerCalendar
}

// Result is what a run issued.
type Result struct {
	Sockets int     `json:"sockets"` // connected sockets the run wrote to
	Commits int64   `json:"commits"` // transactions (fan-out) or commits (rate)
	PerCal  []int64 `json:"per_calendar"`
	// Behind is the latest a worker took a commit off the schedule (rate
	// plans), the counterpart of the SQL writer's lateness.
	Behind time.Duration `json:"behind_ns"`
	// Seconds runs from the schedule's start until the last commit was
	// written (rate), or until every frame was in the kernel (fan-out).
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// Frame layout. Every frame raw sends has the same length: uuids, the
// 19-digit stamp and the offset are fixed-width.
const (
	framePrefix = `42["event:updated",{"event_id":"`
	titleKey    = `","event_title":"bench:`
	calendarKey = `","event_calendar_id":"`
	changedKey  = `","changed":["title"]},"`
	frameSuffix = `"]`
	uuidLen     = 36
	stampLen    = 19 // digits of Unix nanoseconds from 2001 to 2286
	offsetLen   = 16 + 1 + 8
	payloadLen  = len(framePrefix) + uuidLen + len(titleKey) + stampLen + len(calendarKey) + uuidLen + len(changedKey) + offsetLen + len(frameSuffix)
	headerLen   = 4 // 0x81, 126, 16-bit length
	frameLen    = headerLen + payloadLen
	// stampAt is where the stamp's digits start in a frame.
	stampAt = headerLen + len(framePrefix) + uuidLen + len(titleKey)
)

// lsnOf is the offset raw gives commit k: a made-up LSN, ascending.
func lsnOf(k int64) uint64 { return 0x1000000 + uint64(k)<<8 }

// appendFrame appends the WebSocket frame of an event:updated for event e
// of calendar cal carrying stamp (Unix ns) and offset lsn-00000000.
func appendFrame(dst []byte, cal, e int, stamp int64, lsn uint64) []byte {
	dst = append(dst, 0x81, 126, byte(payloadLen>>8), byte(payloadLen))
	dst = append(dst, framePrefix...)
	dst = append(dst, harness.EventID(cal, e)...)
	dst = append(dst, titleKey...)
	dst = appendStamp(dst, stamp)
	dst = append(dst, calendarKey...)
	dst = append(dst, harness.CalendarID(cal)...)
	dst = append(dst, changedKey...)
	const hex = "0123456789ABCDEF"
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hex[(lsn>>uint(shift))&0xf])
	}
	dst = append(dst, "-00000000"...)
	return append(dst, frameSuffix...)
}

// appendStamp appends ns as exactly stampLen digits.
func appendStamp(dst []byte, ns int64) []byte {
	var d [stampLen]byte
	for i := stampLen - 1; i >= 0; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(dst, d[:]...)
}

// HTTP and WebSocket handshake.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key []byte) string {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(wsGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// request is the little raw reads of an HTTP request.
type request struct {
	path      []byte // request target, query included
	upgrade   bool   // Upgrade: websocket
	key       []byte // Sec-WebSocket-Key
	websocket bool   // transport=websocket
	polling   bool   // transport=polling
}

var errBadRequest = errors.New("bad request")

// parseRequest parses the head of an HTTP/1.1 request (up to and
// including the blank line); head aliases the caller's buffer.
func parseRequest(head []byte) (request, error) {
	var r request
	line, rest, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok {
		return r, errBadRequest
	}
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[0]) != "GET" || !bytes.HasPrefix(f[2], []byte("HTTP/1.")) {
		return r, errBadRequest
	}
	r.path = f[1]
	if !bytes.HasPrefix(r.path, []byte("/socket.io/")) || !bytes.Contains(r.path, []byte("EIO=4")) {
		return r, errBadRequest
	}
	r.websocket = bytes.Contains(r.path, []byte("transport=websocket"))
	r.polling = bytes.Contains(r.path, []byte("transport=polling"))
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			r.upgrade = bytes.EqualFold(value, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Key")):
			r.key = value
		}
	}
	return r, nil
}

// openPacket is the Engine.IO open packet for sid (no upgrades: the
// session starts on WebSocket).
func openPacket(sid string) []byte {
	return []byte(`0{"sid":"` + sid + `","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`)
}

// appendServerFrame appends payload as one final unmasked text frame.
func appendServerFrame(dst, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x81, byte(n))
	case n < 1<<16:
		dst = append(dst, 0x81, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x81, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, payload...)
}

// upgradeResponse is the 101 reply and the open packet, written at once.
func upgradeResponse(key []byte, sid string) []byte {
	b := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		acceptKey(key) + "\r\n\r\n")
	return appendServerFrame(b, openPacket(sid))
}

// pollingResponse answers a polling handshake with the open packet and
// closes: raw serves no polling session, only the harness's probe.
func pollingResponse(sid string) []byte {
	body := openPacket(sid)
	return append([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"), body...)
}

var badRequestResponse = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

// clientFrame is one frame a client sent.
type clientFrame struct {
	op      byte
	payload []byte // unmasked in place
}

var errFrame = errors.New("bad client frame")

// parseClientFrame parses one masked frame at the start of b; n is 0 when
// b holds only part of one. The payload is unmasked in place.
func parseClientFrame(b []byte) (f clientFrame, n int, err error) {
	if len(b) < 2 {
		return f, 0, nil
	}
	if b[0]&0x80 == 0 || b[1]&0x80 == 0 {
		return f, 0, errFrame // fragmented, or unmasked from a client
	}
	f.op = b[0] & 0x0f
	size, at := uint64(b[1]&0x7f), 2
	switch size {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		size, at = uint64(b[2])<<8|uint64(b[3]), 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		size = 0
		for _, c := range b[2:10] {
			size = size<<8 | uint64(c)
		}
		at = 10
	}
	if size > 1<<16 {
		return f, 0, errFrame
	}
	if len(b) < at+4+int(size) {
		return f, 0, nil
	}
	mask := b[at : at+4]
	p := b[at+4 : at+4+int(size)]
	for i := range p {
		p[i] ^= mask[i&3]
	}
	f.payload = p
	return f, at + 4 + int(size), nil
}

// userOfConnect returns the bench user index of a CONNECT packet
// ("40{"token":"<jwt>"}"): the last group of the token's userId claim,
// which harness.UserID makes the index in hex. The token is not verified.
func userOfConnect(p []byte) (int, error) {
	if !bytes.HasPrefix(p, []byte("40{")) {
		return -1, errors.New("not a CONNECT to / with auth")
	}
	const tk = `"token":"`
	i := bytes.Index(p, []byte(tk))
	if i < 0 {
		return -1, errors.New("CONNECT without a token")
	}
	tok := p[i+len(tk):]
	if j := bytes.IndexByte(tok, '"'); j >= 0 {
		tok = tok[:j]
	}
	parts := bytes.Split(tok, []byte("."))
	if len(parts) != 3 {
		return -1, errors.New("token is not a JWT")
	}
	claims := make([]byte, base64.RawURLEncoding.DecodedLen(len(parts[1])))
	n, err := base64.RawURLEncoding.Decode(claims, parts[1])
	if err != nil {
		return -1, errors.New("token claims are not base64url")
	}
	claims = claims[:n]
	const uk = `"userId":"`
	i = bytes.Index(claims, []byte(uk))
	if i < 0 || len(claims) < i+len(uk)+uuidLen {
		return -1, errors.New("token without userId")
	}
	id := claims[i+len(uk) : i+len(uk)+uuidLen]
	u, err := strconv.ParseUint(string(id[uuidLen-12:]), 16, 31)
	if err != nil {
		return -1, errors.New("userId is not a bench user")
	}
	return int(u), nil
}

// Payload is the Socket.IO packet of raw's frame for event e of calendar
// cal, stamp and commit offset lsn-00000000: what the server "gateway"
// (package gwonly) must send byte for byte.
func Payload(cal, e int, stamp int64, lsn uint64) []byte {
	return appendFrame(nil, cal, e, stamp, lsn)[headerLen:]
}
