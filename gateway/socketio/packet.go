package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/koordi/koordi-realtime/schema"
)

// PacketType is a Socket.IO v5 packet type.
type PacketType byte

// Socket.IO v5 packet types.
const (
	Connect      PacketType = 0
	Disconnect   PacketType = 1
	Event        PacketType = 2
	Ack          PacketType = 3
	ConnectError PacketType = 4
	BinaryEvent  PacketType = 5
	BinaryAck    PacketType = 6
)

// MaxAttachments bounds the binary attachments of one packet, so a peer
// cannot make the server buffer without limit (each attachment is itself at
// most the Engine.IO MaxPayload).
const MaxAttachments = 10

// maxAckIDDigits keeps ack ids inside what a JavaScript number holds exactly.
const maxAckIDDigits = 15

// ErrBadPacket reports input that is not a valid Socket.IO v5 packet.
var ErrBadPacket = errors.New("socketio: malformed packet")

// Packet is one decoded Socket.IO packet (without its binary attachments).
type Packet struct {
	Type        PacketType
	Namespace   string          // "/" when absent on the wire
	ID          int64           // ack id; -1 when absent
	Attachments int             // binary types only
	Data        json.RawMessage // nil when absent
}

// DecodePacket decodes the text form of a packet (the data of an Engine.IO
// message packet). Data aliases b. The payload is checked against the
// packet type as the reference parser does.
func DecodePacket(b []byte) (Packet, error) {
	p := Packet{Namespace: "/", ID: -1}
	if len(b) == 0 || b[0] < '0' || b[0] > '6' {
		return p, fmt.Errorf("%w: unknown packet type", ErrBadPacket)
	}
	p.Type = PacketType(b[0] - '0')
	i := 1
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		j := bytes.IndexByte(b[i:], '-')
		if j <= 0 || j > 3 {
			return p, fmt.Errorf("%w: illegal attachments", ErrBadPacket)
		}
		n, err := strconv.Atoi(string(b[i : i+j]))
		if err != nil || n < 0 || n > MaxAttachments {
			return p, fmt.Errorf("%w: illegal attachments", ErrBadPacket)
		}
		p.Attachments = n
		i += j + 1
	}
	if i < len(b) && b[i] == '/' {
		j := bytes.IndexByte(b[i:], ',')
		if j < 0 {
			p.Namespace = string(b[i:])
			i = len(b)
		} else {
			p.Namespace = string(b[i : i+j])
			i += j + 1
		}
	}
	if start := i; i < len(b) && isDigit(b[i]) {
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i-start > maxAckIDDigits {
			return p, fmt.Errorf("%w: ack id too long", ErrBadPacket)
		}
		p.ID, _ = strconv.ParseInt(string(b[start:i]), 10, 64)
	}
	if i < len(b) {
		p.Data = json.RawMessage(b[i:])
		if !json.Valid(p.Data) {
			return p, fmt.Errorf("%w: invalid payload", ErrBadPacket)
		}
	}
	if err := checkPayload(p.Type, p.Data); err != nil {
		return p, err
	}
	return p, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// checkPayload applies the reference parser's isPayloadValid.
func checkPayload(t PacketType, data json.RawMessage) error {
	first := firstByte(data)
	switch t {
	case Connect:
		if data == nil || first == '{' {
			return nil
		}
	case Disconnect:
		if data == nil {
			return nil
		}
	case ConnectError:
		if first == '{' || first == '"' {
			return nil
		}
	case Event, BinaryEvent:
		if first == '[' {
			if _, err := eventName(data); err == nil {
				return nil
			}
		}
	case Ack, BinaryAck:
		if first == '[' {
			return nil
		}
	}
	return fmt.Errorf("%w: invalid payload for packet type %d", ErrBadPacket, t)
}

func firstByte(data json.RawMessage) byte {
	for _, c := range data {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}

// eventName returns the event name (the first element) of an EVENT payload.
func eventName(data json.RawMessage) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '['
		return "", err
	}
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	switch v := tok.(type) {
	case string:
		// Names socket.io-client handles itself may not be emitted (the
		// reference parser refuses them too); the catalogue lists them.
		if schema.IsReservedEventName(v) {
			return "", fmt.Errorf("%w: reserved event name %q", ErrBadPacket, v)
		}
		return v, nil
	case json.Number:
		return v.String(), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	}
	return "", fmt.Errorf("%w: event name is not a string", ErrBadPacket)
}

// splitArgs splits an EVENT or ACK payload (a JSON array) into its elements.
func splitArgs(data json.RawMessage) ([]json.RawMessage, error) {
	var args []json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPacket, err)
	}
	return args, nil
}

// AppendPacket appends the text form of p to dst (the inverse of
// DecodePacket): type, attachments count and '-', namespace and ',' unless
// it is "/", ack id, then data.
func AppendPacket(dst []byte, p Packet) []byte {
	dst = append(dst, byte('0'+p.Type))
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		dst = strconv.AppendInt(dst, int64(p.Attachments), 10)
		dst = append(dst, '-')
	}
	if p.Namespace != "" && p.Namespace != "/" {
		dst = append(dst, p.Namespace...)
		dst = append(dst, ',')
	}
	if p.ID >= 0 {
		dst = strconv.AppendInt(dst, p.ID, 10)
	}
	return append(dst, p.Data...)
}

// placeholder is how a binary attachment appears in a packet's JSON.
type placeholder struct {
	Placeholder bool `json:"_placeholder"`
	Num         *int `json:"num"`
}

// checkPlaceholders verifies that every placeholder object in data refers to
// one of n attachments (the reference parser's "illegal attachments").
func checkPlaceholders(data json.RawMessage, n int) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPacket, err)
	}
	var walk func(v any) error
	walk = func(v any) error {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				if err := walk(e); err != nil {
					return err
				}
			}
		case map[string]any:
			if ph, ok := x["_placeholder"].(bool); ok && ph {
				num, ok := x["num"].(float64)
				if !ok || num < 0 || num >= float64(n) || num != float64(int(num)) {
					return fmt.Errorf("%w: illegal attachments", ErrBadPacket)
				}
				return nil
			}
			for _, e := range x {
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(v)
}

// PlaceholderNum reports whether arg is a binary placeholder
// ({"_placeholder":true,"num":n}) and returns n.
func PlaceholderNum(arg json.RawMessage) (int, bool) {
	if firstByte(arg) != '{' || !bytes.Contains(arg, []byte("_placeholder")) {
		return 0, false
	}
	var ph placeholder
	if err := json.Unmarshal(arg, &ph); err != nil || !ph.Placeholder || ph.Num == nil {
		return 0, false
	}
	return *ph.Num, true
}
