package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/koordi/koordi-realtime/schema"
)

// A pid is the session token of Socket.IO connection state recovery. Ours is
// self-contained, so a process that never saw the session can resume it:
//
//	base64url( version(1) | instance(8) | lsn(8) | index(4) | user uuid(16) | mac(16) )
//
// mac is HMAC-SHA256 over the preceding bytes, truncated to 128 bits, keyed
// with a key derived from the JWT secret (or the recovery secret). The client
// cannot forge a position or another user's session; the pid reveals the
// user id and a position, no more than the token the client already holds.
// Version 1, written before offsets had an 8-digit index, has a 2-byte index
// and still verifies, so sessions survive an upgrade.
const (
	pidVersion = 2
	pidBody    = 1 + 8 + 8 + 4 + 16
	pidMAC     = 16
	pidLen     = pidBody + pidMAC

	pidV1Body = 1 + 8 + 8 + 2 + 16
	pidV1Len  = pidV1Body + pidMAC
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
	binary.BigEndian.PutUint32(b[17:21], p.start.Index)
	// User ids come from verified tokens; one that is not a uuid signs as
	// zeros and never matches its user again, so it cannot recover.
	user, _ := schema.ParseUUID(p.userID)
	copy(b[21:37], user[:])
	m := hmac.New(sha256.New, key)
	m.Write(b[:pidBody])
	copy(b[pidBody:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// pidEncoding decodes pids: one string per pid.
var pidEncoding = base64.RawURLEncoding.Strict()

func decodePID(key []byte, s string) (pid, error) {
	n := base64.RawURLEncoding.DecodedLen(len(s))
	// The exact length too: the decoder skips \r and \n, so a 51-byte v1
	// pid (68 characters) would also decode from 69 with a newline in it.
	if n != pidLen && n != pidV1Len || len(s) != base64.RawURLEncoding.EncodedLen(n) {
		return pid{}, errBadPID
	}
	var buf [pidLen]byte
	b := buf[:n]
	// Strict: otherwise the unused low bits of the last character are
	// ignored, and several strings would decode to one signed pid.
	if got, err := pidEncoding.Decode(b, []byte(s)); err != nil || got != n {
		return pid{}, errBadPID
	}
	body := n - pidMAC
	m := hmac.New(sha256.New, key)
	m.Write(b[:body])
	if !hmac.Equal(m.Sum(nil)[:pidMAC], b[body:]) {
		return pid{}, errBadPID
	}
	var p pid
	copy(p.instance[:], b[1:9])
	p.start.LSN = binary.BigEndian.Uint64(b[9:17])
	var user schema.UUID
	switch {
	case b[0] == pidVersion && n == pidLen:
		p.start.Index = binary.BigEndian.Uint32(b[17:21])
		copy(user[:], b[21:37])
	case b[0] == 1 && n == pidV1Len:
		p.start.Index = uint32(binary.BigEndian.Uint16(b[17:19]))
		copy(user[:], b[19:35])
	default:
		return pid{}, errBadPID
	}
	p.userID = user.String()
	return p, nil
}
