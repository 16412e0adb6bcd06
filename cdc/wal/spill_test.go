package wal

import (
	"encoding/binary"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// changes covers every field a spill record carries: each op, NULL and
// empty values, a key-only old row, a logical message, non-ASCII text.
func spillChanges() []Change {
	return []Change{
		{Op: OpInsert, Table: "events", New: RowOf(map[string]Value{"id": {Text: "e1", Valid: true}, "title": {Text: "Drop-off · école", Valid: true}, "location": {}})},
		{Op: OpUpdate, Table: "events", OldFull: true,
			Old: RowOf(map[string]Value{"id": {Text: "e1", Valid: true}, "assigned_to_user_id": {}}),
			New: RowOf(map[string]Value{"id": {Text: "e1", Valid: true}, "assigned_to_user_id": {Text: "u2", Valid: true}, "description": {Text: "", Valid: true}})},
		{Op: OpUpdate, Table: "users", Old: RowOf(map[string]Value{"id": {Text: "u1", Valid: true}}), New: RowOf(map[string]Value{"id": {Text: "u1", Valid: true}})},
		{Op: OpDelete, Table: "event_calendar_memberships", OldFull: true, Old: RowOf(map[string]Value{"id": {Text: "m1", Valid: true}, "status": {Text: "accepted", Valid: true}})},
		{Op: OpMessage, Message: []byte(`{"room":"user:x","event":"e","data":{}}`)},
		{Op: OpInsert, Table: "supplemental_events", New: RowOf(map[string]Value{})},
	}
}

func TestSpillRoundTrip(t *testing.T) {
	in := spillChanges()
	for _, tc := range []struct {
		name    string
		spillAt int
		spilled bool
	}{
		{"never", 0, false},
		{"under the limit", 1 << 20, false},
		{"from the first change", 1, true},
		{"part way", approxSize(&in[0]) + approxSize(&in[1]) + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tx Tx
			defer tx.Release()
			for _, c := range in {
				if err := tx.Add(c, tc.spillAt, t.TempDir()); err != nil {
					t.Fatal(err)
				}
			}
			if tx.Spilled() != tc.spilled {
				t.Fatalf("Spilled() = %v, want %v", tx.Spilled(), tc.spilled)
			}
			if tx.Len() != len(in) {
				t.Fatalf("Len() = %d, want %d", tx.Len(), len(in))
			}
			// Derivation walks a transaction more than once (names first,
			// then the rules): every pass must see the same changes.
			for pass := range 2 {
				var got []Change
				tx.Each(func(c *Change) bool { got = append(got, *c); return true })
				if err := tx.Err(); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, in) {
					t.Fatalf("pass %d:\n got %#v\nwant %#v", pass, got, in)
				}
			}
			var first []Change
			tx.Each(func(c *Change) bool { first = append(first, *c); return len(first) < 2 })
			if len(first) != 2 || !reflect.DeepEqual(first, in[:2]) {
				t.Fatalf("a walk stopped after two changes gave %#v", first)
			}
		})
	}
}

// The file is unlinked as soon as it is created: nothing is left in the
// directory, whatever happens to the process.
func TestSpillLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	var tx Tx
	for _, c := range spillChanges() {
		if err := tx.Add(c, 1, dir); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("spill left %d files in %s", len(entries), dir)
	}
	tx.Release()
	if tx.Spilled() {
		t.Fatal("still spilled after Release")
	}
}

// A spill file that cannot be read back stops the walk with an error,
// never a panic or a wrong change.
func TestSpillCorruptFile(t *testing.T) {
	var tx Tx
	defer tx.Release()
	for _, c := range spillChanges() {
		if err := tx.Add(c, 1, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.spill.w.Flush(); err != nil {
		t.Fatal(err)
	}
	st, err := tx.spill.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.spill.f.Truncate(st.Size() / 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	tx.Each(func(*Change) bool { n++; return true })
	if tx.Err() == nil || !strings.Contains(tx.Err().Error(), "read spilled transaction") {
		t.Fatalf("Err() = %v after reading a truncated file", tx.Err())
	}
	if n >= len(spillChanges()) {
		t.Fatalf("walked %d changes of a truncated file", n)
	}
}

func TestDecodeChangeRefusesGarbage(t *testing.T) {
	cols := []*Columns{NewColumns([]string{"id", "title"})}
	// An INSERT of "events" with a new row of cols[0]: op, flags (new row),
	// table, message, then the row.
	head := []byte{byte(OpInsert), 4, 6, 'e', 'v', 'e', 'n', 't', 's', 0}
	row := func(b ...byte) []byte { return append(append([]byte(nil), head...), b...) }
	if c, err := decodeChange(row(0, 2, 2, 'e', '1', 1, 0), cols); err != nil || c.New.Get("id").Text != "e1" || !c.New.Has("title") || c.New.Get("title").Valid {
		t.Fatalf("a good record: %+v, %v", c, err)
	}
	for _, b := range [][]byte{
		nil, {1}, {1, 0, 200}, {1, 6, 0, 0, 5, 'a'},
		row(1),                 // a columns id out of range
		row(0, 3, 0, 0),        // a cell neither absent, NULL nor text
		row(0, 2, 9, 'e'),      // text running past the record
		row(0, 2, 2, 'e', '1'), // a column missing
		row(0x80),              // a truncated id
	} {
		if _, err := decodeChange(b, cols); err == nil {
			t.Errorf("decodeChange(%v) = nil error", b)
		}
	}
}

// TestSpillNestedWalks: derivation may walk a transaction inside a walk of
// it (a sync's counts while deriving its changes); on a spilled transaction
// larger than the read buffer, the outer walk must still see every change.
func TestSpillNestedWalks(t *testing.T) {
	var tx Tx
	defer tx.Release()
	var in []Change
	for i := range 5000 {
		c := Change{Op: OpInsert, Table: "events", New: RowOf(map[string]Value{"id": {Text: fmt.Sprintf("e%04d", i), Valid: true}, "title": {Text: strings.Repeat("t", 40), Valid: true}})}
		in = append(in, c)
		if err := tx.Add(c, 1, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	outer, inner := 0, 0
	tx.Each(func(c *Change) bool {
		if outer == 10 {
			tx.Each(func(*Change) bool { inner++; return true })
		}
		if c.New.Get("id") != in[outer].New.Get("id") {
			t.Fatalf("outer walk: change %d is %v, want %v", outer, c.New.Get("id"), in[outer].New.Get("id"))
		}
		outer++
		return true
	})
	if err := tx.Err(); err != nil {
		t.Fatal(err)
	}
	if outer != len(in) || inner != len(in) {
		t.Fatalf("outer walk saw %d changes, inner %d; want %d each", outer, inner, len(in))
	}
}

// TestReaderUvarint: the record reader's varints are encoding/binary's.
func TestReaderUvarint(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 300, 1<<32 - 1, 1 << 63, ^uint64(0)} {
		b := binary.AppendUvarint(nil, v)
		r := &reader{s: string(b) + "rest"}
		if got := r.uvarint(); r.err != nil || got != v || r.s != "rest" {
			t.Errorf("uvarint(%x) = %d, %v, rest %q", b, got, r.err, r.s)
		}
	}
	for _, bad := range []string{"", "\x80", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"} {
		r := &reader{s: bad}
		if _, n := binary.Uvarint([]byte(bad)); n > 0 {
			t.Fatalf("%q is a valid varint to encoding/binary", bad)
		}
		if r.uvarint(); r.err == nil {
			t.Errorf("uvarint(%q) accepted", bad)
		}
	}
}
