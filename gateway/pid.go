package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/koordi/koordi-realtime/schema"
)

// A pid is the session token of Socket.IO connection state recovery. Ours is
// self-contained, so a process that never saw the session can resume it:
//
//	base64url( version(1) | instance(8) | lsn(8) | index(2) | user uuid(16) | mac(16) )
//
// mac is HMAC-SHA256 over the preceding bytes, truncated to 128 bits, keyed
// with a key derived from the JWT secret. The client cannot forge a position
// or another user's session; the pid reveals the user id and a position, no
// more than the token the client already holds.
const (
	pidVersion = 1
	pidBody    = 1 + 8 + 8 + 2 + 16
	pidMAC     = 16
	pidLen     = pidBody + pidMAC
)

var errBadPID = errors.New("invalid pid")

type pid struct {
	instance [8]byte
	start    schema.Offset
	userID   string // lower-case canonical uuid
}

// derivePIDKey separates the pid key from the JWT secret, so a pid is never
// a valid signature over anything the JWT secret signs.
func derivePIDKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("koordi-realtime connection state recovery pid v1"))
	return m.Sum(nil)
}

func encodePID(key []byte, p pid) string {
	var b [pidLen]byte
	b[0] = pidVersion
	copy(b[1:9], p.instance[:])
	binary.BigEndian.PutUint64(b[9:17], p.start.LSN)
	binary.BigEndian.PutUint16(b[17:19], p.start.Index)
	putUUID(b[19:35], p.userID)
	m := hmac.New(sha256.New, key)
	m.Write(b[:pidBody])
	copy(b[pidBody:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func decodePID(key []byte, s string) (pid, error) {
	if base64.RawURLEncoding.DecodedLen(len(s)) != pidLen {
		return pid{}, errBadPID
	}
	var b [pidLen]byte
	if n, err := base64.RawURLEncoding.Decode(b[:], []byte(s)); err != nil || n != pidLen {
		return pid{}, errBadPID
	}
	m := hmac.New(sha256.New, key)
	m.Write(b[:pidBody])
	if !hmac.Equal(m.Sum(nil)[:pidMAC], b[pidBody:]) || b[0] != pidVersion {
		return pid{}, errBadPID
	}
	var p pid
	copy(p.instance[:], b[1:9])
	p.start.LSN = binary.BigEndian.Uint64(b[9:17])
	p.start.Index = binary.BigEndian.Uint16(b[17:19])
	p.userID = formatUUID(b[19:35])
	return p, nil
}

// putUUID writes the 16 bytes of a canonical uuid string (validated by the
// caller: user ids come from verified tokens).
func putUUID(dst []byte, s string) {
	h := strings.ReplaceAll(s, "-", "")
	_, _ = hex.Decode(dst, []byte(h))
}

func formatUUID(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
