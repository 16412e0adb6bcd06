package engineio

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
)

// Packet types of Engine.IO v4, as the first byte of a text packet.
const (
	TypeOpen    byte = '0'
	TypeClose   byte = '1'
	TypePing    byte = '2'
	TypePong    byte = '3'
	TypeMessage byte = '4'
	TypeUpgrade byte = '5'
	TypeNoop    byte = '6'
)

// recordSeparator joins packets in one polling payload.
const recordSeparator = '\x1e'

// ErrBadPacket reports input that is not an Engine.IO v4 packet or payload.
var ErrBadPacket = errors.New("engineio: malformed packet")

// Packet is one Engine.IO packet as it is queued for the wire. A text packet
// holds its type byte followed by its data ("4hello", "2"); a binary packet
// holds the raw message bytes (binary packets are always messages).
type Packet struct {
	Data   []byte
	Binary bool
}

// Decoded is one packet read from the peer.
type Decoded struct {
	Type   byte   // one of the Type constants
	Data   []byte // packet data without the type byte (for binary: the bytes)
	Binary bool
}

// DecodePacket decodes one text packet of a WebSocket message or one record
// of a polling payload. A polling record starting with 'b' is base64 binary.
// Data aliases text (binary records are decoded into a new slice).
func DecodePacket(text []byte, polling bool) (Decoded, error) {
	if len(text) == 0 {
		return Decoded{}, fmt.Errorf("%w: empty packet", ErrBadPacket)
	}
	t := text[0]
	if polling && t == 'b' {
		data := make([]byte, base64.StdEncoding.DecodedLen(len(text)-1))
		n, err := base64.StdEncoding.Decode(data, text[1:])
		if err != nil {
			return Decoded{}, fmt.Errorf("%w: bad base64: %v", ErrBadPacket, err)
		}
		return Decoded{Type: TypeMessage, Data: data[:n], Binary: true}, nil
	}
	if t < TypeOpen || t > TypeNoop {
		return Decoded{}, fmt.Errorf("%w: unknown type %q", ErrBadPacket, t)
	}
	return Decoded{Type: t, Data: text[1:]}, nil
}

// DecodePayload decodes a polling POST body: packets separated by \x1e.
// It fails on the first malformed record, returning nothing.
func DecodePayload(body []byte) ([]Decoded, error) {
	var out []Decoded
	if err := forEachPacket(body, func(d Decoded) bool { out = append(out, d); return true }); err != nil {
		return nil, err
	}
	return out, nil
}

// forEachPacket decodes body record by record and calls f with each packet
// until f returns false. It returns the first decoding error; packets before
// it have been handed to f (as the reference server delivers them). Memory
// beyond body is one packet at a time.
func forEachPacket(body []byte, f func(Decoded) bool) error {
	for {
		rec, rest, more := bytes.Cut(body, []byte{recordSeparator})
		d, err := DecodePacket(rec, true)
		if err != nil {
			return err
		}
		if !f(d) || !more {
			return nil
		}
		body = rest
	}
}

// AppendPayload appends the polling encoding of ps to dst: text packets as
// they are, binary ones as 'b' + base64, separated by \x1e.
func AppendPayload(dst []byte, ps []Packet) []byte {
	for i, p := range ps {
		if i > 0 {
			dst = append(dst, recordSeparator)
		}
		if p.Binary {
			dst = append(dst, 'b')
			dst = base64.StdEncoding.AppendEncode(dst, p.Data)
			continue
		}
		dst = append(dst, p.Data...)
	}
	return dst
}

// payloadLen is the length AppendPayload will produce.
func payloadLen(ps []Packet) int {
	n := 0
	for i, p := range ps {
		if i > 0 {
			n++
		}
		if p.Binary {
			n += 1 + base64.StdEncoding.EncodedLen(len(p.Data))
		} else {
			n += len(p.Data)
		}
	}
	return n
}
