package gateway

import (
	"slices"
	"testing"
	"unsafe"

	"github.com/koordi/koordi-realtime/schema"
)

// TestViewRoomsShareCalendarNames: the sockets of a calendar's members get
// the same room name, one string for the room, dropped with its last member.
func TestViewRoomsShareCalendarNames(t *testing.T) {
	const (
		ada  = "00000000-0000-4000-8000-000000000001"
		bob  = "00000000-0000-4000-8000-000000000002"
		cal1 = "00000000-0000-4000-9000-000000000001"
		cal2 = "00000000-0000-4000-9000-000000000002"
	)
	id := func(s string) schema.UUID { u, _ := schema.ParseUUID(s); return u }
	v := newView()
	v.add(id(ada), id(cal1))
	v.add(id(bob), id(cal1))
	v.add(id(ada), id(cal2))
	ra, rb := v.rooms(ada), v.rooms(bob)
	if want := (roomSet{schema.UserRoom(ada), schema.CalendarRoom(cal1), schema.CalendarRoom(cal2)}); !slices.Equal(ra, want) {
		t.Fatalf("ada's rooms %v, want %v", ra, want)
	}
	if want := (roomSet{schema.UserRoom(bob), schema.CalendarRoom(cal1)}); !slices.Equal(rb, want) {
		t.Fatalf("bob's rooms %v, want %v", rb, want)
	}
	if unsafe.StringData(ra[1]) != unsafe.StringData(rb[1]) {
		t.Error("two sockets of one calendar hold two copies of its room name")
	}
	if got := v.rooms("not-a-uuid"); !slices.Equal(got, roomSet{schema.UserRoom("not-a-uuid")}) {
		t.Errorf("rooms of a non-uuid user: %v", got)
	}
	v.remove(id(ada), id(cal2))
	if _, ok := v.calRoom[id(cal2)]; ok {
		t.Error("a calendar without members keeps its room name")
	}
	if _, ok := v.calRoom[id(cal1)]; !ok {
		t.Error("a calendar with members lost its room name")
	}
	if got := v.rooms(ada); !slices.Equal(got, roomSet{schema.UserRoom(ada), schema.CalendarRoom(cal1)}) {
		t.Errorf("after the leave: %v", got)
	}
}
