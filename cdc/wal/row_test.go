package wal

import (
	"maps"
	"testing"
)

// TestRow: a row tells a NULL from an absent column and no row from a row
// of no columns, reads by name and by position, and lists what it has in
// column order.
func TestRow(t *testing.T) {
	cols := NewColumns([]string{"id", "title", "location", "description"})
	r := NewRow(cols)
	r.SetAt(0, Value{Text: "e1", Valid: true})
	r.SetAt(2, Value{}) // NULL
	for _, tc := range []struct {
		col   string
		want  Value
		has   bool
		valid bool
	}{
		{"id", Value{Text: "e1", Valid: true}, true, true},
		{"location", Value{}, true, false},
		{"title", Value{}, false, false},   // not carried (a key tuple's column)
		{"missing", Value{}, false, false}, // not a column
	} {
		v, ok := r.Lookup(tc.col)
		if v != tc.want || ok != tc.has || r.Has(tc.col) != tc.has || r.Get(tc.col) != tc.want || r.Get(tc.col).Valid != tc.valid {
			t.Errorf("%s: Lookup = %+v, %v; want %+v, %v", tc.col, v, ok, tc.want, tc.has)
		}
	}
	if v, ok := r.At(2); ok != true || v.Valid {
		t.Errorf("At(2) = %+v, %v: want a present NULL", v, ok)
	}
	var names []string
	for n := range r.All() {
		names = append(names, n)
	}
	if len(names) != 2 || names[0] != "id" || names[1] != "location" || r.Len() != 2 {
		t.Errorf("All() = %v, Len() = %d: want [id location], 2", names, r.Len())
	}

	var none Row
	if !none.IsZero() || none.Has("id") || none.Len() != 0 || none.Get("id") != (Value{}) {
		t.Error("the zero Row is not an empty no-row")
	}
	if empty := RowOf(map[string]Value{}); empty.IsZero() || empty.Len() != 0 {
		t.Error("RowOf of an empty map is no row, want a row of no columns")
	}
	if !RowOf(nil).IsZero() {
		t.Error("RowOf(nil) is a row")
	}
	m := map[string]Value{"b": {Text: "2", Valid: true}, "a": {}}
	if got := maps.Collect(RowOf(m).All()); !maps.Equal(got, m) {
		t.Errorf("RowOf(%v) holds %v", m, got)
	}
	// A repeated name (never so in a table) names its first position.
	dup := NewRow(NewColumns([]string{"x", "x"}))
	dup.SetAt(0, Value{Text: "first", Valid: true})
	dup.SetAt(1, Value{Text: "second", Valid: true})
	if dup.Get("x").Text != "first" {
		t.Errorf("repeated column reads %q, want the first", dup.Get("x").Text)
	}
}
