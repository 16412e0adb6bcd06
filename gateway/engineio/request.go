package engineio

import (
	"encoding/binary"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Request describes the HTTP request that opened a session.
type Request struct {
	Header     http.Header
	Query      url.Values
	RemoteAddr string
	Time       time.Time
}

// sessionRequest is the opening request as a session keeps it for its life:
// the header fields the application may read and the raw query, packed into
// one string each. A map of header fields and one of query values cost about
// 550 bytes per held connection, a tenth of its heap; Request rebuilds them
// on the rare call (a refused CONNECT's log line, the application's
// Handshake).
type sessionRequest struct {
	header string // each kept field as uvarint key length, key, uvarint value length, value
	query  string // the raw query, as the URL had it
	remote string
	time   time.Time
}

func newSessionRequest(r *http.Request) sessionRequest {
	n := 0
	for k, vv := range r.Header {
		if !handshakeOnly[k] {
			for _, v := range vv {
				n += 2*binary.MaxVarintLen32 + len(k) + len(v)
			}
		}
	}
	b := make([]byte, 0, n)
	for k, vv := range r.Header {
		if handshakeOnly[k] {
			continue
		}
		for _, v := range vv {
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return sessionRequest{
		header: string(b),
		// A copy: the URL's string holds the whole request target.
		query:  strings.Clone(r.URL.RawQuery),
		remote: r.RemoteAddr,
		time:   time.Now(),
	}
}

// request rebuilds the Request: the kept header fields, each with its values
// in their order, and the query parsed as url.URL.Query does.
func (s *sessionRequest) request() Request {
	h := http.Header{}
	for p := s.header; len(p) > 0; {
		k, rest, ok := cutField(p)
		if !ok {
			break
		}
		v, rest, ok := cutField(rest)
		if !ok {
			break
		}
		h[k] = append(h[k], v)
		p = rest
	}
	q, _ := url.ParseQuery(s.query)
	return Request{Header: h, Query: q, RemoteAddr: s.remote, Time: s.time}
}

// cutField splits a uvarint-length-prefixed field off p.
func cutField(p string) (field, rest string, ok bool) {
	var n uint64
	var shift uint
	for i := 0; i < len(p) && i < binary.MaxVarintLen64; i++ {
		c := p[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			p = p[i+1:]
			if n > uint64(len(p)) {
				return "", "", false
			}
			return p[:n], p[n:], true
		}
		shift += 7
	}
	return "", "", false
}

// handshakeOnly are the header fields that only served the HTTP exchange or
// the WebSocket handshake: a session does not keep them.
var handshakeOnly = map[string]bool{
	"Connection":               true,
	"Upgrade":                  true,
	"Sec-Websocket-Key":        true,
	"Sec-Websocket-Version":    true,
	"Sec-Websocket-Extensions": true,
	"Accept-Encoding":          true,
	"Cache-Control":            true,
	"Pragma":                   true,
}
