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

-- emit sends an explicit event with the calling transaction: it is decoded at
-- the transaction's commit and never if it rolls back. The stream validates
-- room, event and payload; a bad one is logged and counted there, so a typo
-- here can never abort the caller's transaction.
CREATE OR REPLACE FUNCTION koordi_realtime.emit(room text, event text, payload jsonb)
RETURNS void
LANGUAGE sql VOLATILE
AS $fn$
    SELECT FROM pg_logical_emit_message(
        true, 'koordi_realtime',
        jsonb_build_object('room', room, 'event', event, 'data', payload)::text);
$fn$;
