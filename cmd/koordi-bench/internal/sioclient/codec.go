package sioclient

import (
	"bytes"
	"errors"
	"strconv"
)

// Engine.IO v4 packet types (first byte of a text frame).
const (
	EngineOpen    = '0'
	EngineClose   = '1'
	EnginePing    = '2'
	EnginePong    = '3'
	EngineMessage = '4'
	EngineUpgrade = '5'
	EngineNoop    = '6'
)

// Socket.IO v5 packet types (first byte after an Engine.IO message).
const (
	SocketConnect      = '0'
	SocketDisconnect   = '1'
	SocketEvent        = '2'
	SocketAck          = '3'
	SocketConnectError = '4'
)

// ErrMalformed is a frame this client cannot parse.
var ErrMalformed = errors.New("malformed packet")

// Packet is a parsed Socket.IO packet carried in one Engine.IO message.
// Data is the JSON after the header (an array for events, an object for
// CONNECT replies and errors); it aliases the frame.
type Packet struct {
	Type      byte
	Namespace []byte // empty means "/"
	ID        int64  // ack id; -1 if absent
	Data      []byte
}

// ParseSocket parses the payload of an Engine.IO message packet (the frame
// without its leading '4'): type, optional namespace ending in ',', optional
// ack id, then JSON. Binary attachments are not used by Koordi and refused.
func ParseSocket(b []byte) (Packet, error) {
	p := Packet{ID: -1}
	if len(b) == 0 {
		return p, ErrMalformed
	}
	p.Type = b[0]
	if p.Type < SocketConnect || p.Type > '6' {
		return p, ErrMalformed
	}
	if p.Type == '5' || p.Type == '6' {
		return p, ErrMalformed // binary event / ack
	}
	b = b[1:]
	if len(b) > 0 && b[0] == '/' {
		i := bytes.IndexByte(b, ',')
		if i < 0 {
			// A namespace alone: "0/custom" is a valid CONNECT without data.
			p.Namespace = b
			return p, nil
		}
		p.Namespace, b = b[:i], b[i+1:]
	}
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n > 0 {
		id, err := strconv.ParseInt(string(b[:n]), 10, 64)
		if err != nil {
			return p, ErrMalformed
		}
		p.ID, b = id, b[n:]
	}
	p.Data = b
	return p, nil
}

// EventName splits an EVENT packet's JSON array into the event name and the
// raw remaining arguments (the text after the name's comma, up to but
// excluding the closing bracket). Names with escapes are returned as written.
func EventName(data []byte) (name, args []byte, err error) {
	if len(data) < 4 || data[0] != '[' || data[1] != '"' || data[len(data)-1] != ']' {
		return nil, nil, ErrMalformed
	}
	i := 2
	for i < len(data) && data[i] != '"' {
		if data[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(data) {
		return nil, nil, ErrMalformed
	}
	name = data[2:i]
	rest := data[i+1 : len(data)-1]
	if len(rest) > 0 {
		if rest[0] != ',' {
			return nil, nil, ErrMalformed
		}
		rest = rest[1:]
	}
	return name, rest, nil
}

// StringField finds the first occurrence of "key":"value" in raw JSON and
// returns value's raw bytes (escapes kept). It is a scan, not a parser: the
// load generator uses it on payloads whose shape it wrote.
func StringField(data []byte, key string) ([]byte, bool) {
	var pat [64]byte
	k := append(append(append(pat[:0], '"'), key...), '"', ':', '"')
	i := bytes.Index(data, k)
	if i < 0 {
		return nil, false
	}
	v := data[i+len(k):]
	j := 0
	for j < len(v) && v[j] != '"' {
		if v[j] == '\\' {
			j++
		}
		j++
	}
	if j >= len(v) {
		return nil, false
	}
	return v[:j], true
}

// AppendConnect appends the Engine.IO message carrying a Socket.IO CONNECT
// to namespace "/" with auth {"token": token}. token must be JSON-safe (a
// JWT is: base64url and dots).
func AppendConnect(dst []byte, token string) []byte {
	dst = append(dst, EngineMessage, SocketConnect)
	if token == "" {
		return dst
	}
	dst = append(dst, `{"token":"`...)
	dst = append(dst, token...)
	return append(dst, `"}`...)
}
