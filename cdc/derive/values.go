package derive

import (
	"strings"
	"time"

	"github.com/koordi/koordi-realtime/cdc/wal"
)

// uid is a uuid in its 16 raw bytes. State keys are uids rather than their
// 36-byte text so that the large maps (users, events) stay compact.
type uid [16]byte

// parseUID parses the canonical 8-4-4-4-12 form in either case. Anything
// else (a text id in a foreign schema, garbage) reports false and is simply
// not tracked in state.
func parseUID(s string) (uid, bool) {
	var u uid
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; i += 2 {
		if s[i] == '-' {
			i--
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
	}
	return u, j == 16
}

func parseUIDBytes(b []byte) (uid, bool) {
	// The string conversion does not escape, so the compiler avoids a copy.
	return parseUID(string(b))
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String renders the lower-case canonical form, as PostgreSQL prints uuids.
func (u uid) String() string {
	const digits = "0123456789abcdef"
	var b [36]byte
	j := 0
	for i, c := range u {
		switch i {
		case 4, 6, 8, 10:
			b[j] = '-'
			j++
		}
		b[j] = digits[c>>4]
		b[j+1] = digits[c&0xF]
		j += 2
	}
	return string(b[:])
}

// str returns the column's text, or "" when it is NULL or absent (a dropped
// column must never panic).
func str(r wal.Row, col string) string {
	v := r[col]
	if !v.Valid {
		return ""
	}
	return v.Text
}

// nullable returns a pointer to the column's text, nil when NULL or absent.
func nullable(r wal.Row, col string) *string {
	v, ok := r[col]
	if !ok || !v.Valid {
		return nil
	}
	s := v.Text
	return &s
}

// valid reports whether the column is present and not NULL.
func valid(r wal.Row, col string) bool { return r[col].Valid }

// changed reports whether col differs between the old and new tuple. A column
// missing from either side (dropped, or no old tuple) counts as unchanged:
// the rules only react to differences they can see.
func changed(old, new wal.Row, col string) bool {
	o, ok := old[col]
	if !ok {
		return false
	}
	n, ok := new[col]
	if !ok {
		return false
	}
	return o != n
}

// boolText parses PostgreSQL's boolean text output ("t"/"f"), and the
// spellings a ::text cast or a hand-written row may carry.
func boolText(s string) bool {
	switch strings.ToLower(s) {
	case "t", "true", "y", "yes", "on", "1":
		return true
	}
	return false
}

func boolCol(r wal.Row, col string) bool {
	v := r[col]
	return v.Valid && boolText(v.Text)
}

// pgTimeLayouts are the timestamptz shapes PostgreSQL prints with DateStyle
// ISO (and with a 'T' separator for hand-written input). Fractional seconds
// are accepted by time.Parse without being named in the layout.
var pgTimeLayouts = [...]string{
	"2006-01-02 15:04:05Z07",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05Z07:00:00",
	"2006-01-02T15:04:05Z07",
	"2006-01-02T15:04:05Z07:00",
	"2006-01-02T15:04:05Z07:00:00",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04:05",
}

// rfc3339 turns a PostgreSQL timestamp text into RFC 3339 UTC. Whole
// milliseconds are written with exactly three digits ("…T09:30:00.000Z"),
// which is what Koordi's API (JavaScript's toISOString) sends, so clients that
// compare strings keep working; finer values keep their precision. Text that
// does not parse (infinity, BC dates) passes through unchanged.
func rfc3339(s string) string {
	for _, layout := range pgTimeLayouts {
		t, err := time.Parse(layout, s)
		if err != nil {
			continue
		}
		t = t.UTC()
		if t.Nanosecond()%int(time.Millisecond) == 0 {
			return t.Format("2006-01-02T15:04:05.000Z07:00")
		}
		return t.Format(time.RFC3339Nano)
	}
	return s
}
