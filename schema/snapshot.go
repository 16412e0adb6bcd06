package schema

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MembershipSnapshot is every accepted membership as one database snapshot
// saw it, with that snapshot's transaction visibility: the gateway starts
// from it and applies the room moves of each later transaction the snapshot
// did not see, so that no membership change is lost or applied twice where
// the snapshot and the replication stream meet.
type MembershipSnapshot struct {
	// Accepted lists the (user, calendar) pairs of accepted memberships.
	Accepted []Membership
	// Seen is the snapshot's visibility (pg_current_snapshot()).
	Seen TxSnapshot
}

// Membership is one accepted membership: user ids and calendar ids are
// canonical uuids.
type Membership struct {
	User, Calendar string
}

// TxSnapshot is PostgreSQL's pg_snapshot: transactions with full ids below
// Xmin had ended when it was taken, those from Xmax on had not started, and
// those listed in Xip were in progress.
type TxSnapshot struct {
	Xmin, Xmax uint64
	Xip        []uint64
}

// ErrBadSnapshot is returned by ParseTxSnapshot for text that is not a
// pg_snapshot.
var ErrBadSnapshot = errors.New("malformed pg_snapshot")

// ParseTxSnapshot parses pg_snapshot's text form "xmin:xmax:xip,xip,…".
func ParseTxSnapshot(s string) (TxSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return TxSnapshot{}, fmt.Errorf("%w: %q", ErrBadSnapshot, truncate(s))
	}
	var snap TxSnapshot
	var err error
	if snap.Xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return TxSnapshot{}, fmt.Errorf("%w: %q", ErrBadSnapshot, truncate(s))
	}
	if snap.Xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil || snap.Xmax < snap.Xmin {
		return TxSnapshot{}, fmt.Errorf("%w: %q", ErrBadSnapshot, truncate(s))
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return TxSnapshot{}, fmt.Errorf("%w: %q", ErrBadSnapshot, truncate(s))
			}
			snap.Xip = append(snap.Xip, v)
		}
	}
	return snap, nil
}

// Visible reports whether a committed transaction, known by the 32-bit id
// logical decoding reports, was visible to the snapshot: its changes are
// already in what the snapshot read. The id is widened to the snapshot's
// epoch, the full id within 2^31 of Xmax, as PostgreSQL itself does.
func (s TxSnapshot) Visible(xid uint32) bool {
	full := widenXid(xid, s.Xmax)
	switch {
	case full < s.Xmin:
		return true
	case full >= s.Xmax:
		return false
	}
	return !slices.Contains(s.Xip, full)
}

// widenXid returns the 64-bit id whose low 32 bits are xid, nearest to ref.
func widenXid(xid uint32, ref uint64) uint64 {
	full := ref&^0xFFFFFFFF | uint64(xid)
	switch {
	case full > ref && full-ref > 1<<31 && full >= 1<<32:
		full -= 1 << 32
	case full < ref && ref-full > 1<<31:
		full += 1 << 32
	}
	return full
}
