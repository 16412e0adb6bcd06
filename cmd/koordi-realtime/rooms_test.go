package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

// recordingRooms logs the calls roomSink makes, in order.
type recordingRooms struct{ calls []string }

func (r *recordingRooms) Publish(_ context.Context, tx schema.Transaction) error {
	var names []string
	for _, ev := range tx.Events {
		names = append(names, ev.Event+"@"+ev.Room)
	}
	r.calls = append(r.calls, "publish "+strings.Join(names, " "))
	return nil
}
func (r *recordingRooms) JoinUser(userID, room string) {
	r.calls = append(r.calls, "join "+userID+" "+room)
}
func (r *recordingRooms) LeaveUser(userID, room string) {
	r.calls = append(r.calls, "leave "+userID+" "+room)
}
func (r *recordingRooms) CloseRoom(room string) { r.calls = append(r.calls, "close "+room) }
func (r *recordingRooms) ResumeAfter(off schema.Offset) {
	r.calls = append(r.calls, "resume after "+off.String())
}
func (r *recordingRooms) Reset(reason string) { r.calls = append(r.calls, "reset "+reason) }

const (
	cal  = "c0000000-0000-4000-8000-000000000001"
	user = "a0000000-0000-4000-8000-000000000001"
)

func env(event, room string, payload any) schema.Envelope {
	data, _ := json.Marshal(payload)
	return schema.Envelope{Room: room, Event: event, Data: data}
}

func TestRoomSinkMovesSocketsAtTheRightPoint(t *testing.T) {
	calRoom, userRoom := schema.CalendarRoom(cal), schema.UserRoom(user)
	member := schema.Member{CalendarID: cal, UserID: user}
	created := env(schema.EventCreated, calRoom, schema.EventRef{EventID: "e"})
	tests := []struct {
		name   string
		events []schema.Envelope
		want   []string
	}{
		{
			name:   "added member joins before member:added and later events",
			events: []schema.Envelope{created, env(schema.MemberAdded, calRoom, member), created},
			want: []string{
				"publish event:created@" + calRoom,
				"join " + user + " " + calRoom,
				"publish member:added@" + calRoom + " event:created@" + calRoom,
			},
		},
		{
			name: "removed member leaves before the calendar copy and gets the user-room copy",
			events: []schema.Envelope{created, env(schema.MemberRemoved, calRoom, member),
				env(schema.MemberRemoved, userRoom, member), created},
			want: []string{
				"publish event:created@" + calRoom,
				"leave " + user + " " + calRoom,
				"publish member:removed@" + calRoom + " member:removed@" + userRoom + " event:created@" + calRoom,
			},
		},
		{
			name:   "deleted calendar is announced, then closed",
			events: []schema.Envelope{env(schema.CalendarDeleted, calRoom, schema.CalendarRef{CalendarID: cal})},
			want:   []string{"publish calendar:deleted@" + calRoom, "close " + calRoom},
		},
		{
			name:   "plain transaction is one publish",
			events: []schema.Envelope{created, created},
			want:   []string{"publish event:created@" + calRoom + " event:created@" + calRoom},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingRooms{}
			sink := &roomSink{rooms: rec}
			if err := sink.Deliver(context.Background(), schema.Transaction{CommitLSN: 1, Events: tt.events}); err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprint(rec.calls), fmt.Sprint(tt.want); got != want {
				t.Errorf("calls:\n got %s\nwant %s", strings.Join(rec.calls, "\n     "), strings.Join(tt.want, "\n     "))
			}
		})
	}
}

// TestRoomSinkNeverStopsOnAnEvent: an emitted event named like a room
// change moves nobody, and a member event without a user is delivered
// without moving anyone — an error here would stop the stream at the same
// transaction after every restart.
func TestRoomSinkNeverStopsOnAnEvent(t *testing.T) {
	calRoom := schema.CalendarRoom(cal)
	emitted := env(schema.MemberAdded, calRoom, schema.Member{CalendarID: cal, UserID: user})
	emitted.Explicit = true
	closing := env(schema.CalendarDeleted, calRoom, schema.CalendarRef{CalendarID: cal})
	closing.Explicit = true
	rec := &recordingRooms{}
	sink := &roomSink{rooms: rec}
	tx := schema.Transaction{Events: []schema.Envelope{emitted, closing, env(schema.MemberAdded, calRoom, map[string]string{})}}
	if err := sink.Deliver(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	want := []string{"publish member:added@" + calRoom + " calendar:deleted@" + calRoom + " member:added@" + calRoom}
	if fmt.Sprint(rec.calls) != fmt.Sprint(want) {
		t.Errorf("calls %q, want %q", rec.calls, want)
	}
}

func TestRoomSinkRelaysStreamPosition(t *testing.T) {
	rec := &recordingRooms{}
	sink := &roomSink{rooms: rec}
	sink.streamFrom(0x100)
	sink.streamFrom(0x200) // a reconnect: the gateway already knows
	sink.reset("slot_invalidated")
	want := []string{"resume after 0000000000000100-0000", "reset slot_invalidated"}
	if fmt.Sprint(rec.calls) != fmt.Sprint(want) {
		t.Errorf("calls %q, want %q", rec.calls, want)
	}
}
