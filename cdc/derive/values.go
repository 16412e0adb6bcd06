package derive

import (
	"strings"
	"time"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// uid is the package's short name for the service's one uuid codec: state
// keys are the 16 raw bytes rather than the 36-byte text, so that the large
// maps (users, events) stay compact. Ids that are not uuids (a text id in a
// foreign schema, garbage) do not parse and are simply not tracked.
type uid = schema.UUID

var (
	parseUID      = schema.ParseUUID
	parseUIDBytes = schema.ParseUUIDBytes
)

// str returns the column's text, or "" when it is NULL or absent (a dropped
// column must never panic).
func str(r wal.Row, col string) string {
	v := r.Get(col)
	if !v.Valid {
		return ""
	}
	return v.Text
}

// nullable returns a pointer to the column's text, nil when NULL or absent.
func nullable(r wal.Row, col string) *string {
	v, ok := r.Lookup(col)
	if !ok || !v.Valid {
		return nil
	}
	s := v.Text
	return &s
}

// valid reports whether the column is present and not NULL.
func valid(r wal.Row, col string) bool { return r.Get(col).Valid }

// changed reports whether col differs between the old and new tuple. A column
// missing from either side (dropped, or no old tuple) counts as unchanged:
// the rules only react to differences they can see.
func changed(old, new wal.Row, col string) bool {
	o, ok := old.Lookup(col)
	if !ok {
		return false
	}
	n, ok := new.Lookup(col)
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
	v := r.Get(col)
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
