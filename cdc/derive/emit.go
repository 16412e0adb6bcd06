package derive

import (
	"bytes"
	"encoding/json"
	"unicode"
	"unicode/utf8"

	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
)

const (
	// maxEmitBytes bounds an emit message (emit itself refuses longer ones).
	maxEmitBytes = ksql.MaxEmitBytes
	// maxEventName bounds an emitted event name.
	maxEventName = 128
)

// parseEmit validates the content written by koordi_realtime.emit:
// {"room": "<user|calendar>:<uuid>", "event": "<name>", "data": <json>}.
// It returns the compacted data, or the reject reason. Keys are matched
// exactly (not case-insensitively, as encoding/json would); unknown keys are
// ignored.
func parseEmit(content []byte) (room, event string, data []byte, reason string) {
	if len(content) > maxEmitBytes {
		return "", "", nil, rejectTooLarge
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(content, &obj); err != nil || obj == nil {
		return "", "", nil, rejectMalformed
	}
	if err := json.Unmarshal(obj["room"], &room); err != nil {
		return "", "", nil, rejectBadRoom
	}
	if _, _, err := schema.ParseRoom(room); err != nil {
		return "", "", nil, rejectBadRoom
	}
	if err := json.Unmarshal(obj["event"], &event); err != nil || !saneEventName(event) {
		return "", "", nil, rejectBadEvent
	}
	raw, ok := obj["data"]
	if !ok {
		return "", "", nil, rejectBadData
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return "", "", nil, rejectBadData
	}
	return room, event, buf.Bytes(), ""
}

// saneEventName accepts short printable UTF-8 names that the client does not
// reserve for itself.
func saneEventName(s string) bool {
	if s == "" || len(s) > maxEventName || !utf8.ValidString(s) || schema.IsReservedEventName(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}
