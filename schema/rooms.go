package schema

import (
	"errors"
	"strings"
)

// Room prefixes. A room is "<prefix><uuid>".
const (
	UserRoomPrefix     = "user:"
	CalendarRoomPrefix = "calendar:"
)

// ErrBadRoom is returned by [ParseRoom] for a room name the service does not serve.
var ErrBadRoom = errors.New("unknown room")

// UserRoom is the room every socket of a user joins on connect.
func UserRoom(userID string) string { return UserRoomPrefix + userID }

// CalendarRoom is the room of an event calendar's accepted members.
func CalendarRoom(calendarID string) string { return CalendarRoomPrefix + calendarID }

// RoomKind tells user rooms from calendar rooms.
type RoomKind uint8

const (
	RoomUser RoomKind = iota + 1
	RoomCalendar
)

// ParseRoom splits a room name into its kind and id. The id must be a
// canonical uuid string; anything else is [ErrBadRoom].
func ParseRoom(room string) (RoomKind, string, error) {
	switch {
	case strings.HasPrefix(room, UserRoomPrefix) && IsUUID(room[len(UserRoomPrefix):]):
		return RoomUser, room[len(UserRoomPrefix):], nil
	case strings.HasPrefix(room, CalendarRoomPrefix) && IsUUID(room[len(CalendarRoomPrefix):]):
		return RoomCalendar, room[len(CalendarRoomPrefix):], nil
	}
	return 0, "", ErrBadRoom
}
