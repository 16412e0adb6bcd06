package derive

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// resolveTxs are Koordi's two resolve-conflict statements as transactions,
// 2 s apart: E1's return (at Field 3), then E2's departure (to Field 3).
func resolveTxs() (returns, departures *wal.Tx) {
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	return &wal.Tx{CommitLSN: 0x100, CommitTime: t0, Changes: []wal.Change{del(tS, trip(S1, E1, "return", field3, home))}},
		&wal.Tx{CommitLSN: 0x200, CommitTime: t0.Add(2 * time.Second), Changes: []wal.Change{del(tS, trip(S2, E2, "departure", field3, home))}}
}

func conflictCount(tx schema.Transaction) int {
	n := 0
	for _, e := range tx.Events {
		if e.Event == schema.ConflictResolved {
			n++
		}
	}
	return n
}

// A transaction whose delivery failed is derived again (cdc.Consumer.Run
// resumes after the last hand-off): the second half pairs again, with the
// same bytes; any other departures-only transaction does not.
func TestConflictPairRederived(t *testing.T) {
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	ret, dep := resolveTxs()
	if got := d.Derive(ret); len(got.Events) != 0 {
		t.Fatalf("returns half derived %d events", len(got.Events))
	}
	first := d.Derive(dep)
	if conflictCount(first) != 2 {
		t.Fatalf("departures half: %d conflict:resolved, want 2 (C1, C2)", conflictCount(first))
	}
	again := d.Derive(dep)
	if !bytes.Equal(transactionLines(t, []schema.Transaction{first}), transactionLines(t, []schema.Transaction{again})) {
		t.Errorf("derived again differs:\n%s\n%s", transactionLines(t, []schema.Transaction{first}), transactionLines(t, []schema.Transaction{again}))
	}
	other := &wal.Tx{CommitLSN: 0x300, CommitTime: dep.CommitTime, Changes: []wal.Change{del(tS, trip(S3, E3, "departure", field3, home))}}
	if n := conflictCount(d.Derive(other)); n != 0 {
		t.Errorf("a second departures-only transaction paired with a spent record: %d events", n)
	}
	if n := conflictCount(d.Derive(dep)); n != 0 {
		t.Errorf("the record is gone, yet the departures half paired again: %d events", n)
	}
}

// Bootstrap (a new slot after a gap) forgets the pending half; an older
// transaction never pairs with a newer record.
func TestConflictPairBootstrapAndOrder(t *testing.T) {
	d := New(Config{})
	ret, dep := resolveTxs()
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	d.Derive(ret)
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	if n := conflictCount(d.Derive(dep)); n != 0 {
		t.Errorf("paired across a bootstrap: %d events", n)
	}
	late := *ret
	late.CommitLSN = 0x300
	d.Derive(&late)
	if n := conflictCount(d.Derive(dep)); n != 0 {
		t.Errorf("a transaction older than the record paired with it: %d events", n)
	}
}

func TestSamePlace(t *testing.T) {
	at := func(addr, lat, lng string) place {
		return tripPlace(row("x_address", addr, "x_lat", lat, "x_lng", lng), "x")
	}
	tests := []struct {
		a, b place
		want bool
	}{
		{at("Field 3, Riverside Park", "39.80110000", "-89.64370000"), at("Field 3, Riverside Park", "1", "1"), true},
		{at("Field 3,  Riverside Park ", "1", "1"), at("field 3, RIVERSIDE park", "2", "2"), true},
		{at("Field 3", "39.80110000", "-89.64370000"), at("Riverside Park", "39.8011", "-89.6437"), true},
		{at("Field 3", "39.80110000", "-89.64370000"), at("Riverside Park", "39.80110090", "-89.64370000"), true},
		{at("Field 3", "39.80110000", "-89.64370000"), at("Riverside Park", "39.80120000", "-89.64370000"), false},
		{at("Field 3", "39.80110000", "-89.64370000"), at("Field 4", "39.80110000", "-89.64470000"), false},
		{at("", "0", "0"), at("", "0.00000000", "0.00000000"), false}, // no address, no coordinates
		{at("", "NaN", "NaN"), at("", "NaN", "NaN"), false},
		{at("A", "x", "1"), at("B", "x", "1"), false},
	}
	for i, tt := range tests {
		if got := samePlace(tt.a, tt.b); got != tt.want {
			t.Errorf("%d: samePlace(%+v, %+v) = %v, want %v", i, tt.a, tt.b, got, tt.want)
		}
	}
	long := string(bytes.Repeat([]byte("a"), maxAddressBytes+1))
	if p := at(long, "1", "1"); p.addr != "" || !p.hasCoord {
		t.Errorf("an over-long address is kept: %d bytes", len(p.addr))
	}
}
