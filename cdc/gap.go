package cdc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Recorded gaps
//
// A gap the consumer finds (Config.OnReset) must reach the sockets even when
// its report cannot be delivered where it is found: with several nodes the
// report is a message to NATS, and a leader that finds a gap while NATS is
// down loses its term, perhaps to another node that knows nothing of it.
// RecordGap writes the gap into WAL as a logical decoding message, so it
// travels with the stream: whichever consumer streams the slot next decodes
// it in its place and reports it before the transactions after it, and the
// slot's confirmed position never passes it before it is reported.
//
// pg_logical_emit_message is executable by every role, so a message proves
// nothing about its writer: a recorded gap carries an HMAC of its reason
// under Config.GapKey (a secret every node of the service shares), and a
// message that does not verify is ignored and counted. A forged record could
// only make every socket refetch; an unsigned one cannot even do that.

// gapPrefix is the logical decoding message prefix of a recorded gap.
const gapPrefix = "koordi_realtime.gap"

// GapSink is a Sink that carries recorded gaps itself, in the stream's
// order, and can fail: a recorded gap then stays unconfirmed in the slot and
// is decoded again by the next session. commitLSN is the recording
// transaction's: a session decodes the replay window again (Config.Retain),
// so a sink that already carried the gap of that commit (an earlier
// session's) should skip it. A Sink without it has recorded gaps reported
// to Config.OnReset.
type GapSink interface {
	RecordedGap(ctx context.Context, reason string, commitLSN uint64) error
}

// ErrNoGapKey is returned by RecordGap when Config.GapKey is not set.
var ErrNoGapKey = errors.New("no gap key configured")

// gapRecord is a recorded gap's message content: "v1 <unix nanoseconds>
// <reason> <hex HMAC-SHA256 of 'v1 <slot> <xid> <nanoseconds> <reason>'>".
// The slot binds it to this service's stream, the xid to the transaction
// that wrote it (a copy replayed in another transaction, by a role that saw
// it in a server log, does not verify); the time makes each record
// distinct.
func gapRecord(key []byte, slot string, xid uint32, reason string, at time.Time) string {
	ns := strconv.FormatInt(at.UnixNano(), 10)
	return "v1 " + ns + " " + reason + " " + gapMAC(key, slot, xid, ns, reason)
}

func gapMAC(key []byte, slot string, xid uint32, ns, reason string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("v1 " + slot + " " + strconv.FormatUint(uint64(xid), 10) + " " + ns + " " + reason))
	return hex.EncodeToString(m.Sum(nil))
}

// maxGapRecord bounds a record worth verifying: a reason is a short word.
const maxGapRecord = 256

// parseGapRecord returns the reason of a record that verifies under key for
// slot, written in transaction xid.
func parseGapRecord(key []byte, slot string, xid uint32, content []byte) (string, bool) {
	if len(key) == 0 || len(content) > maxGapRecord {
		return "", false
	}
	f := strings.Fields(string(content))
	if len(f) != 4 || f[0] != "v1" || !validReason(f[2]) {
		return "", false
	}
	if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
		return "", false
	}
	want := gapMAC(key, slot, xid, f[1], f[2])
	if !hmac.Equal([]byte(want), []byte(f[3])) {
		return "", false
	}
	return f[2], true
}

// validReason: lower-case letters and underscores, as every reason is.
func validReason(r string) bool {
	if r == "" || len(r) > 64 {
		return false
	}
	for _, b := range []byte(r) {
		if (b < 'a' || b > 'z') && b != '_' {
			return false
		}
	}
	return true
}

// RecordGap writes a gap into WAL for whichever consumer streams the slot
// next (see Recorded gaps): a caller that could not deliver a gap reported
// to Config.OnReset records it, and it is reported again, in the stream's
// order, by the session that decodes it. It connects with a regular
// (non-replication) connection of its own and commits at once.
func (c *Consumer) RecordGap(ctx context.Context, reason string) error {
	if len(c.cfg.GapKey) == 0 {
		return ErrNoGapKey
	}
	if !validReason(reason) {
		return fmt.Errorf("record gap: reason %q: use lower-case letters and underscores", reason)
	}
	conn, err := pgx.Connect(ctx, c.cfg.ConnString)
	if err != nil {
		return fmt.Errorf("record gap: connect: %w", err)
	}
	defer conn.Close(context.Background())
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The xid logical decoding reports is the low 32 bits of this one.
		var xid int64
		if err := tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&xid); err != nil {
			return err
		}
		record := gapRecord(c.cfg.GapKey, c.cfg.SlotName, uint32(xid), reason, time.Now())
		_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2)`, gapPrefix, record)
		return err
	})
	if err != nil {
		return fmt.Errorf("record gap: %w", err)
	}
	c.log.Info("gap recorded in the stream for the next session to report", "reason", reason)
	return nil
}
