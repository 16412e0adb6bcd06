package engineio

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
)

// SIDHash is how a session id appears in logs, under the key "sid_hash":
// the first 8 hex digits of its SHA-256. A sid is a credential (whoever
// holds it can read the session's messages and post as its client), so it
// is never logged; 32 bits of its hash tell log lines of one session apart
// and give nothing back.
func SIDHash(sid string) string {
	sum := sha256.Sum256([]byte(sid))
	return hex.EncodeToString(sum[:4])
}

// LogAttr is the connection's attribute for log lines: sid_hash=SIDHash(ID()).
// The hash is computed only when a handler writes the line, so debug lines
// cost nothing at other levels.
func (c *Conn) LogAttr() slog.Attr { return slog.Any("sid_hash", logSID(c.id)) }

// logSID defers SIDHash to the log handler. It prints as the hash too, so
// that the attribute formatted outside slog does not show the sid.
type logSID string

func (s logSID) LogValue() slog.Value { return slog.StringValue(SIDHash(string(s))) }
func (s logSID) String() string       { return SIDHash(string(s)) }
