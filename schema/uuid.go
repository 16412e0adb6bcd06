package schema

// UUID is a uuid in its 16 raw bytes: the one codec both sides use, so ids
// kept in large maps (derivation state) or in signed tokens (recovery pids)
// stay compact, and rooms always name them in PostgreSQL's lower-case form.
type UUID [16]byte

// ParseUUID parses the canonical 8-4-4-4-12 form in either case. Anything
// else reports false.
func ParseUUID(s string) (UUID, bool) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	// Hex digits come in pairs between the four dashes (every group has an
	// even length), so a pair never straddles a dash; a dash anywhere else
	// is not a hex digit.
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	return u, true
}

// ParseUUIDBytes is ParseUUID for a byte slice, without copying it.
func ParseUUIDBytes(b []byte) (UUID, bool) {
	// The conversion does not escape, so the compiler avoids the copy.
	return ParseUUID(string(b))
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
func (u UUID) String() string {
	var b [36]byte
	return string(u.appendText(b[:0]))
}

func (u UUID) appendText(b []byte) []byte {
	const digits = "0123456789abcdef"
	for i, c := range u {
		switch i {
		case 4, 6, 8, 10:
			b = append(b, '-')
		}
		b = append(b, digits[c>>4], digits[c&0xF])
	}
	return b
}

// IsUUID reports whether s is a uuid in the canonical 8-4-4-4-12 hex form,
// as PostgreSQL prints them (either case accepted).
func IsUUID(s string) bool {
	_, ok := ParseUUID(s)
	return ok
}
