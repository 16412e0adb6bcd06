package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
)

// ReadMemberships reads every accepted membership in one REPEATABLE READ
// snapshot, together with that snapshot's visibility (pg_current_snapshot()),
// so that a reader can start from it and apply exactly the room moves of the
// transactions it did not see (schema.TxSnapshot.Visible on each
// transaction's xid): nothing lost, nothing applied twice where the
// snapshot and the stream meet.
func ReadMemberships(ctx context.Context, connString string) (schema.MembershipSnapshot, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	stabilise(cfg.Config.RuntimeParams)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ioTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: connect: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	// The first statement takes the transaction's snapshot; the query after
	// reads through the same one.
	var text string
	if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&text); err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: snapshot: %w", err)
	}
	var snap schema.MembershipSnapshot
	if snap.Seen, err = schema.ParseTxSnapshot(text); err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT user_id::text, event_calendar_id::text FROM event_calendar_memberships
		WHERE status::text = 'accepted' AND user_id IS NOT NULL`)
	if err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: %w", err)
	}
	for rows.Next() {
		var m schema.Membership
		if err := rows.Scan(&m.User, &m.Calendar); err != nil {
			rows.Close()
			return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: %w", err)
		}
		snap.Accepted = append(snap.Accepted, m)
	}
	if err := rows.Err(); err != nil {
		return schema.MembershipSnapshot{}, fmt.Errorf("read memberships: %w", err)
	}
	return snap, nil
}
