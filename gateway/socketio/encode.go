package socketio

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

// Frame is one encoded Engine.IO packet ready for the wire (for a Socket.IO
// EVENT: "4" + "2[...]" or "4/nsp,2[...]"). Immutable once built: one Frame
// is shared by every socket of a room and written as-is on websocket (one
// text message) and polling (joined with \x1e) alike.
type Frame []byte

// Binary is an argument carried as a binary attachment. Passed at the top
// level of Emit's or an ack's arguments, it makes the packet a BINARY_EVENT
// or BINARY_ACK with a placeholder in its place.
type Binary []byte

// EncodeEvent builds the frame of an EVENT with JSON args (each already
// encoded, and valid JSON: they are copied verbatim), e.g. the event name
// then payload then offset string. No per-recipient work is needed after
// this; it allocates once.
func EncodeEvent(namespace, event string, args ...json.RawMessage) Frame {
	n := 2 + len(namespace) + 1 + 2 + quotedLen(event) + 1
	for _, a := range args {
		n += len(a) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, engineio.TypeMessage, '0'+byte(Event))
	if namespace != "" && namespace != "/" {
		b = append(b, namespace...)
		b = append(b, ',')
	}
	b = append(b, '[')
	b = appendQuoted(b, event)
	for _, a := range args {
		b = append(b, ',')
		b = append(b, a...)
	}
	b = append(b, ']')
	return b
}

// encodePacket builds the Engine.IO packets for a Socket.IO packet of type t
// (Event or Ack) whose JSON array is head (already-encoded elements, e.g. the
// event name) followed by args. Binary args become attachments, turning the
// type into BinaryEvent/BinaryAck.
func encodePacket(t PacketType, namespace string, id int64, head []json.RawMessage, args []any) ([]engineio.Packet, error) {
	var (
		elems []json.RawMessage
		bins  []engineio.Packet
	)
	elems = append(elems, head...)
	for _, a := range args {
		switch v := a.(type) {
		case Binary:
			elems = append(elems, json.RawMessage(`{"_placeholder":true,"num":`+strconv.Itoa(len(bins))+`}`))
			bins = append(bins, engineio.Packet{Data: v, Binary: true})
		case json.RawMessage:
			if !json.Valid(v) {
				return nil, fmt.Errorf("socketio: argument is not valid JSON")
			}
			elems = append(elems, v)
		default:
			raw, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("socketio: encode argument: %w", err)
			}
			elems = append(elems, raw)
		}
	}
	p := Packet{Type: t, Namespace: namespace, ID: id}
	if len(bins) > 0 {
		p.Type += BinaryEvent - Event // Event→BinaryEvent, Ack→BinaryAck
		p.Attachments = len(bins)
	}
	data := []byte{'['}
	for i, e := range elems {
		if i > 0 {
			data = append(data, ',')
		}
		data = append(data, e...)
	}
	p.Data = append(data, ']')
	text := AppendPacket([]byte{engineio.TypeMessage}, p)
	return append([]engineio.Packet{{Data: text}}, bins...), nil
}

// packetFrame encodes a packet without binary attachments as a Frame.
func packetFrame(p Packet) Frame {
	return AppendPacket([]byte{engineio.TypeMessage}, p)
}

const hexDigits = "0123456789abcdef"

// appendQuoted appends s as a JSON string. Unlike encoding/json it does not
// escape <, > and &, so names read on the wire as written.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

func quotedLen(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
	}
	return n + 8 // room for the rare \ufffd and \u2028 expansions without regrowth in common cases
}
