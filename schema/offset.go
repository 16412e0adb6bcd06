package schema

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrBadOffset is returned by [ParseOffset] for anything that is not an offset
// this service wrote. Offsets come back from clients, so this is user input.
var ErrBadOffset = errors.New("malformed offset")

// Offset locates an event in the commit order: the commit LSN of its
// transaction and its index within that transaction.
type Offset struct {
	LSN   uint64
	Index uint32
}

const (
	offsetLen = 16 + 1 + 8
	// legacyOffsetLen is the form with a 4-digit index that earlier versions
	// wrote; clients may still hold one after an upgrade.
	legacyOffsetLen = 16 + 1 + 4
)

// String renders the offset as "<16 hex digits>-<8 hex digits>".
func (o Offset) String() string {
	return string(o.AppendText(make([]byte, 0, offsetLen)))
}

// AppendText appends the string form to b without allocating beyond b's growth.
func (o Offset) AppendText(b []byte) []byte {
	const hexDigits = "0123456789ABCDEF"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(o.LSN>>uint(shift))&0xF])
	}
	b = append(b, '-')
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(o.Index>>uint(shift))&0xF])
	}
	return b
}

// MarshalText implements encoding.TextMarshaler.
func (o Offset) MarshalText() ([]byte, error) { return o.AppendText(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (o *Offset) UnmarshalText(b []byte) error {
	p, err := ParseOffset(string(b))
	if err != nil {
		return err
	}
	*o = p
	return nil
}

// ParseOffset parses the string form written by [Offset.String], and the
// earlier form with a 4-digit index. Lower-case hex digits are accepted.
func ParseOffset(s string) (Offset, error) {
	if (len(s) != offsetLen && len(s) != legacyOffsetLen) || s[16] != '-' || !isHex(s[:16]) || !isHex(s[17:]) {
		return Offset{}, fmt.Errorf("%w: %q", ErrBadOffset, truncate(s))
	}
	lsn, err := strconv.ParseUint(s[:16], 16, 64)
	if err != nil {
		return Offset{}, fmt.Errorf("%w: %q", ErrBadOffset, truncate(s))
	}
	idx, err := strconv.ParseUint(s[17:], 16, 32)
	if err != nil {
		return Offset{}, fmt.Errorf("%w: %q", ErrBadOffset, truncate(s))
	}
	return Offset{LSN: lsn, Index: uint32(idx)}, nil
}

// isHex reports whether s is all hex digits (strconv alone would also take
// a sign or underscores in some forms).
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Compare returns -1, 0 or +1 as o sorts before, with or after p.
func (o Offset) Compare(p Offset) int {
	switch {
	case o.LSN < p.LSN:
		return -1
	case o.LSN > p.LSN:
		return 1
	case o.Index < p.Index:
		return -1
	case o.Index > p.Index:
		return 1
	}
	return 0
}

// IsZero reports whether o is the zero offset, which no event carries.
func (o Offset) IsZero() bool { return o == Offset{} }

// Next is the smallest offset after o.
func (o Offset) Next() Offset {
	if o.Index == ^uint32(0) {
		return Offset{LSN: o.LSN + 1}
	}
	return Offset{LSN: o.LSN, Index: o.Index + 1}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
