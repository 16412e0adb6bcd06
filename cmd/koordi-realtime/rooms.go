package main

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/schema"
)

// roomGateway is what roomSink needs of the gateway.
type roomGateway interface {
	Publish(ctx context.Context, tx schema.Transaction) error
	JoinUser(userID, room string)
	LeaveUser(userID, room string)
	CloseRoom(room string)
	ResumeAfter(off schema.Offset)
	Reset(reason string)
}

// roomSink connects the consumer to the gateway. Beyond publishing, it moves
// sockets between rooms at the exact point of the transaction where
// membership changes (DESIGN.md §4.2, §4.3):
//
//   - member:added: the user's sockets join the calendar room first, so they
//     receive member:added itself and every later event of the calendar;
//   - member:removed: the user's sockets leave the calendar room first, so
//     nothing later reaches them; they get member:removed once, through the
//     copy derivation addresses to the user's own room;
//   - calendar:deleted: published, then every socket leaves the room.
//
// A transaction is therefore published in runs split at those events; the
// gateway's Publish is called in commit order, so order per room holds.
//
// It also relays the consumer's stream position: where a (re)started stream
// begins, so sessions from a previous process can recover, and gaps, which
// become sync:reset.
type roomSink struct {
	rooms   roomGateway
	log     *slog.Logger
	resumed bool // the first stream start was relayed
}

// streamFrom is cdc.Config.OnStream. Only the first start matters to the
// gateway: later ones (reconnects) resend what it has already published,
// which it drops as duplicates.
func (s *roomSink) streamFrom(lsn uint64) {
	if !s.resumed {
		s.resumed = true
		s.rooms.ResumeAfter(schema.Offset{LSN: lsn})
	}
}

// reset is cdc.Config.OnReset: changes may have been lost.
func (s *roomSink) reset(reason string) { s.rooms.Reset(reason) }

func (s *roomSink) Deliver(ctx context.Context, tx schema.Transaction) error {
	publish := func(events []schema.Envelope) error {
		if len(events) == 0 {
			return nil
		}
		return s.rooms.Publish(ctx, schema.Transaction{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Events: events})
	}
	start := 0
	for i := range tx.Events {
		ev := &tx.Events[i]
		if ev.Explicit {
			continue // emitted by SQL: delivered, never a room change
		}
		switch ev.Event {
		case schema.MemberAdded, schema.MemberRemoved, schema.CalendarDeleted:
		default:
			continue // most events: no room change, no parsing
		}
		if kind, _, err := schema.ParseRoom(ev.Room); err != nil || kind != schema.RoomCalendar {
			continue
		}
		switch ev.Event {
		case schema.MemberAdded:
			m, ok := s.memberOf(ev)
			if !ok {
				continue
			}
			if err := publish(tx.Events[start:i]); err != nil {
				return err
			}
			s.rooms.JoinUser(m.UserID, ev.Room)
			start = i
		case schema.MemberRemoved:
			m, ok := s.memberOf(ev)
			if !ok {
				continue
			}
			if err := publish(tx.Events[start:i]); err != nil {
				return err
			}
			s.rooms.LeaveUser(m.UserID, ev.Room)
			start = i
		case schema.CalendarDeleted:
			if err := publish(tx.Events[start : i+1]); err != nil {
				return err
			}
			s.rooms.CloseRoom(ev.Room)
			start = i + 1
		}
	}
	return publish(tx.Events[start:])
}

// memberOf reads the user of a derived member event. Derivation always
// sets it; should it not, the event is still delivered and no socket moves —
// stopping the stream would stop it at the same transaction forever.
func (s *roomSink) memberOf(ev *schema.Envelope) (schema.Member, bool) {
	var m schema.Member
	if err := json.Unmarshal(ev.Data, &m); err != nil || m.UserID == "" {
		if s.log != nil {
			s.log.Error("member event without user_id: no socket moved", "event", ev.Event, "offset", ev.Offset.String())
		}
		return m, false
	}
	return m, true
}

// stateMemberships answers the gateway's membership questions from the state
// the consumer keeps current from the stream, so connects and join:calendar
// are checked against the same view that moves sockets between rooms, without
// a query.
type stateMemberships struct{ state *derive.State }

func (m stateMemberships) AcceptedCalendars(_ context.Context, userID string) ([]string, error) {
	return m.state.AcceptedCalendars(userID), nil
}

func (m stateMemberships) IsAcceptedMember(_ context.Context, userID, calendarID string) (bool, error) {
	return m.state.IsAcceptedMember(userID, calendarID), nil
}
