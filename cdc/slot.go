package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

type slotInfo struct {
	exists    bool
	confirmed uint64
	lost      bool // it existed but was invalidated, and was dropped
}

// lookupSlot checks the configured slot: usable, in use elsewhere, or
// missing (also when it was invalidated, in which case it is dropped so it
// can be created again).
func (c *Consumer) lookupSlot(ctx context.Context, conn *pgx.Conn) (slotInfo, error) {
	var (
		plugin, slotType, walStatus, confirmed *string
		sameDB                                 *bool
		activePID                              *int32
	)
	err := conn.QueryRow(ctx, `
		SELECT plugin, slot_type, database = current_database(), active_pid,
		       confirmed_flush_lsn::text, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.SlotName).
		Scan(&plugin, &slotType, &sameDB, &activePID, &confirmed, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotInfo{}, nil
	}
	if err != nil {
		return slotInfo{}, fmt.Errorf("look up replication slot: %w", err)
	}
	if slotType == nil || *slotType != "logical" || plugin == nil || *plugin != "pgoutput" || sameDB == nil || !*sameDB {
		return slotInfo{}, fmt.Errorf("%w: slot %q is not a pgoutput slot of this database: choose another SLOT_NAME or drop it (SELECT pg_drop_replication_slot('%s'))",
			ErrSlotConflict, c.cfg.SlotName, c.cfg.SlotName)
	}
	if activePID != nil {
		return slotInfo{}, fmt.Errorf("%w: slot %q is streaming to backend pid %d: stop the other koordi-realtime (or use another SLOT_NAME)",
			ErrSlotActive, c.cfg.SlotName, *activePID)
	}
	if walStatus != nil && *walStatus == "lost" {
		c.log.Warn("replication slot was invalidated (WAL removed); recreating it, changes since it was last read are lost", "slot", c.cfg.SlotName)
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, c.cfg.SlotName); err != nil {
			return slotInfo{}, fmt.Errorf("drop invalidated slot: %w", err)
		}
		return slotInfo{lost: true}, nil
	}
	if confirmed == nil {
		return slotInfo{}, fmt.Errorf("%w: slot %q has no confirmed position", ErrSlotConflict, c.cfg.SlotName)
	}
	lsn, err := pglogrepl.ParseLSN(*confirmed)
	if err != nil {
		return slotInfo{}, fmt.Errorf("slot %q: %w", c.cfg.SlotName, err)
	}
	return slotInfo{exists: true, confirmed: uint64(lsn)}, nil
}

// prepareSlot makes the slot ready to stream from and returns the position
// to start at: the existing slot's confirmed position (bootstrapping the
// state with a plain read on the first session), or the consistent point of
// a slot created now (bootstrapping in its snapshot). A slot created now is
// a gap — it was lost, vanished while this process streamed, was dropped to
// stream past a re-created publication, or did not exist when the process
// started (never created, or dropped while the service was stopped) — and is
// reported to OnReset once everything before it is handed off: sessions from
// before it are told to refetch.
func (c *Consumer) prepareSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, slot slotInfo, first bool) (uint64, error) {
	if slot.exists {
		if !c.bootstrapped {
			c.stateMu.Lock()
			err := c.deriver.Bootstrap(ctx, conn)
			c.stateMu.Unlock()
			if err != nil {
				return 0, fmt.Errorf("bootstrap names state: %w", err)
			}
			c.bootstrapped = true
		}
		return slot.confirmed, nil
	}
	recreated := c.bootstrapped // it vanished while this process streamed
	if slot.lost {
		// Kept until the new slot exists: a failed creation drops the new
		// slot too, and the next attempt finds none, lost or not.
		c.lostSlot = true
	}
	start, err := c.createSlot(ctx, conn, repl)
	if err != nil {
		return 0, err
	}
	c.cancelResync() // the new slot's bootstrap and reset cover it
	// Everything decoded before the gap has been handed off (createSlot
	// drained the queue) and nothing after it is queued yet.
	switch {
	case c.lostSlot:
		c.lostSlot = false
		c.reset("slot_invalidated")
	case c.pubGap:
		c.pubGap = false
		c.reset("publication_recreated")
	case recreated:
		c.log.Warn("replication slot disappeared while streaming; created it again, changes in between are lost", "slot", c.cfg.SlotName)
		c.reset("slot_recreated")
	case first:
		// Nothing to tell anyone connected (nobody is yet), but a session
		// of an earlier process that reconnects must refetch: whatever
		// happened between its position and this slot is not in the stream.
		c.reset("slot_created")
	}
	return start, nil
}

// createSlot creates the permanent slot and bootstraps the names state in
// the snapshot it exports, so the state is exactly as of the slot's
// consistent point and the stream continues from there.
func (c *Consumer) createSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) (uint64, error) {
	if c.bootstrapped {
		// The slot vanished while this process was streaming (dropped or
		// invalidated). The new state must not race the deriver: let the
		// delivery goroutine finish what is queued first.
		if err := c.drain(ctx); err != nil {
			return 0, err
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, c.cfg.SlotName, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "EXPORT_SNAPSHOT",
	})
	if err != nil {
		return 0, fmt.Errorf("create replication slot %s: %w", c.cfg.SlotName, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("create replication slot %s: consistent point: %w", c.cfg.SlotName, err)
	}
	if err := c.bootstrapAt(ctx, conn, res.SnapshotName); err != nil {
		// A new slot that the state does not match is worse than none:
		// drop it, so the next attempt creates it with a fresh snapshot.
		dropCtx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if derr := pglogrepl.DropReplicationSlot(dropCtx, repl, c.cfg.SlotName, pglogrepl.DropReplicationSlotOptions{}); derr != nil {
			c.log.Warn("could not drop the slot whose bootstrap failed", "slot", c.cfg.SlotName, "error", derr)
		}
		return 0, err
	}
	c.bootstrapped = true
	c.log.Info("replication slot created", "slot", c.cfg.SlotName, "lsn", res.ConsistentPoint)
	return uint64(lsn), nil
}

// bootstrapAt loads the names state in the exported snapshot.
func (c *Consumer) bootstrapAt(ctx context.Context, conn *pgx.Conn, snapshot string) error {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("bootstrap: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot)); err != nil {
		return fmt.Errorf("bootstrap: use the slot's snapshot: %w", err)
	}
	c.stateMu.Lock()
	err = c.deriver.Bootstrap(ctx, tx)
	c.stateMu.Unlock()
	if err != nil {
		return fmt.Errorf("bootstrap names state: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("bootstrap: commit: %w", err)
	}
	return nil
}

// drain waits until everything queued has been handed off.
func (c *Consumer) drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if handed, _ := c.ack.handedOff(); handed >= c.queuedEnd {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
