-- The service's own objects in a Koordi database. Idempotent; never alters
-- Koordi's columns. The publication name is substituted by the Go side
-- (it is an identifier, so it cannot be a bind parameter).

-- Old values are needed to diff updates and to describe deleted rows.
ALTER TABLE "users" REPLICA IDENTITY FULL;
ALTER TABLE "event_calendars" REPLICA IDENTITY FULL;
ALTER TABLE "event_calendar_memberships" REPLICA IDENTITY FULL;
ALTER TABLE "events" REPLICA IDENTITY FULL;
ALTER TABLE "supplemental_events" REPLICA IDENTITY FULL;

CREATE SCHEMA IF NOT EXISTS koordi_realtime;

-- Explicit events travel as rows of koordi_realtime.emitted, which only its
-- owner (the role running setup) may write: the stream takes explicit events
-- from inserts into this table and from nothing else. A bare logical decoding
-- message would be simpler, but pg_logical_emit_message is executable by every
-- role, so it could never carry a privilege. Each row is deleted in the
-- transaction that wrote it: the insert is in WAL, the table stays empty.
CREATE TABLE IF NOT EXISTS koordi_realtime.emitted (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message text NOT NULL
);
REVOKE ALL ON TABLE koordi_realtime.emitted FROM PUBLIC;

-- emit sends an explicit event with the calling transaction: it is decoded at
-- the transaction's commit and never if it rolls back. Only roles granted
-- EXECUTE may call it (setup grants it to nobody); SECURITY DEFINER lets them
-- write the table they may not write themselves. A message over 1 MiB
-- (sql.MaxEmitBytes) fails the caller's transaction here, so it never reaches
-- WAL. The stream validates room, event and payload; a bad one is logged and
-- counted there, so a typo here can never abort the caller's transaction.
CREATE OR REPLACE FUNCTION koordi_realtime.emit(room text, event text, payload jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    msg text := jsonb_build_object('room', room, 'event', event, 'data', payload)::text;
    row_id bigint;
BEGIN
    IF octet_length(msg) > 1048576 THEN
        RAISE EXCEPTION 'koordi_realtime.emit: the event is % bytes, more than 1 MiB', octet_length(msg)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    INSERT INTO koordi_realtime.emitted (message) VALUES (msg) RETURNING id INTO row_id;
    DELETE FROM koordi_realtime.emitted WHERE id = row_id;
END
$fn$;
REVOKE ALL ON FUNCTION koordi_realtime.emit(text, text, jsonb) FROM PUBLIC;
