-- Koordi's tables exactly as its Prisma migrations leave them
-- (github.com/jamesschaffer/koordi, backend/prisma/migrations, up to
-- 20260128183628_add_is_cancelled_to_events), for the test that streams from
-- the real schema rather than our sql/koordi.sql.
--
-- This is the final effect of replaying the migrations in order, written as
-- one CREATE per table: columns appear in the order the migrations produce
-- them (ALTER TABLE … ADD COLUMN appends, so later columns come last), and
-- the columns and indexes the migrations dropped (google_event_id on events
-- and supplemental_events) are absent. What Prisma does and our koordi.sql
-- does not: no default on "id" (Prisma generates uuids client-side) nor on
-- "updated_at" (@updatedAt is set by the client), so every INSERT must give
-- both. The migration 20251120201426_update_user_field_names renames columns
-- the init migration already creates under their new names; its final
-- effect is those names.
--
-- Not idempotent on purpose: it runs on a fresh database, as `prisma migrate
-- deploy` would.

CREATE TABLE "users" (
    "id"                           uuid          NOT NULL,
    "email"                        varchar(255)  NOT NULL,
    "name"                         varchar(100)  NOT NULL,
    "avatar_url"                   text,
    "google_refresh_token_enc"     text,
    "google_calendar_id"           varchar(255),
    "google_calendar_sync_enabled" boolean       NOT NULL DEFAULT false,
    "home_address"                 text,
    "home_latitude"                decimal(10,8),
    "home_longitude"               decimal(11,8),
    "comfort_buffer_minutes"       integer       NOT NULL DEFAULT 5,
    "keep_supplemental_events"     boolean       NOT NULL DEFAULT false,
    "created_at"                   timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"                   timestamptz(6) NOT NULL,
    "timezone"                     varchar(50),
    CONSTRAINT "users_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "children" (
    "id"            uuid          NOT NULL,
    "name"          varchar(50)   NOT NULL,
    "photo_url"     text,
    "date_of_birth" date,
    "created_at"    timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"    timestamptz(6) NOT NULL,
    CONSTRAINT "children_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "event_calendars" (
    "id"                           uuid          NOT NULL,
    "name"                         varchar(100)  NOT NULL,
    "ics_url"                      text          NOT NULL,
    "child_id"                     uuid          NOT NULL,
    "owner_id"                     uuid          NOT NULL,
    "color"                        varchar(7)    NOT NULL DEFAULT '#3B82F6',
    "sync_enabled"                 boolean       NOT NULL DEFAULT true,
    "last_sync_at"                 timestamptz(6),
    "last_sync_status"             varchar(20)   NOT NULL DEFAULT 'pending',
    "last_sync_error"              text,
    "google_calendar_watch_token"  text,
    "google_calendar_watch_expiry" timestamptz(6),
    "created_at"                   timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"                   timestamptz(6) NOT NULL,
    "sync_in_progress"             boolean       NOT NULL DEFAULT false,
    CONSTRAINT "event_calendars_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "event_calendar_memberships" (
    "id"                 uuid          NOT NULL,
    "event_calendar_id"  uuid          NOT NULL,
    "user_id"            uuid,
    "invited_email"      varchar(255)  NOT NULL,
    "invitation_token"   varchar(255)  NOT NULL,
    "status"             varchar(20)   NOT NULL DEFAULT 'pending',
    "invited_by_user_id" uuid          NOT NULL,
    "invited_at"         timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "responded_at"       timestamptz(6),
    "created_at"         timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"         timestamptz(6) NOT NULL,
    "expires_at"         timestamptz(6),
    CONSTRAINT "event_calendar_memberships_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "events" (
    "id"                  uuid          NOT NULL,
    "event_calendar_id"   uuid          NOT NULL,
    "ics_uid"             varchar(255)  NOT NULL,
    "title"               varchar(255)  NOT NULL,
    "description"         text,
    "location"            text,
    "location_lat"        decimal(10,8),
    "location_lng"        decimal(11,8),
    "start_time"          timestamptz(6) NOT NULL,
    "end_time"            timestamptz(6) NOT NULL,
    "is_all_day"          boolean       NOT NULL DEFAULT false,
    "assigned_to_user_id" uuid,
    "last_modified"       timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "created_at"          timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"          timestamptz(6) NOT NULL,
    "version"             integer       NOT NULL DEFAULT 1,
    "is_skipped"          boolean       NOT NULL DEFAULT false,
    "sync_in_progress"    boolean       NOT NULL DEFAULT false,
    "is_cancelled"        boolean       NOT NULL DEFAULT false,
    CONSTRAINT "events_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "supplemental_events" (
    "id"                  uuid          NOT NULL,
    "parent_event_id"     uuid          NOT NULL,
    "type"                varchar(20)   NOT NULL,
    "title"               varchar(255)  NOT NULL,
    "start_time"          timestamptz(6) NOT NULL,
    "end_time"            timestamptz(6) NOT NULL,
    "origin_address"      text          NOT NULL,
    "origin_lat"          decimal(10,8) NOT NULL,
    "origin_lng"          decimal(11,8) NOT NULL,
    "destination_address" text          NOT NULL,
    "destination_lat"     decimal(10,8) NOT NULL,
    "destination_lng"     decimal(11,8) NOT NULL,
    "drive_time_minutes"  integer       NOT NULL,
    "last_traffic_check"  timestamptz(6),
    "created_at"          timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"          timestamptz(6) NOT NULL,
    CONSTRAINT "supplemental_events_pkey" PRIMARY KEY ("id")
);

-- Not watched by koordi-realtime; present in a real Koordi database.
CREATE TABLE "user_google_event_syncs" (
    "id"                    uuid          NOT NULL,
    "user_id"               uuid          NOT NULL,
    "event_id"              uuid,
    "supplemental_event_id" uuid,
    "google_event_id"       varchar(255)  NOT NULL,
    "sync_type"             varchar(20)   NOT NULL,
    "created_at"            timestamptz(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at"            timestamptz(6) NOT NULL,
    CONSTRAINT "user_google_event_syncs_pkey" PRIMARY KEY ("id")
);

-- Indexes.
CREATE UNIQUE INDEX "users_email_key" ON "users" ("email");
CREATE INDEX "users_email_idx" ON "users" ("email");

CREATE INDEX "event_calendars_child_id_idx" ON "event_calendars" ("child_id");
CREATE INDEX "event_calendars_owner_id_idx" ON "event_calendars" ("owner_id");
CREATE INDEX "event_calendars_ics_url_idx" ON "event_calendars" ("ics_url");
CREATE INDEX "event_calendars_last_sync_at_idx" ON "event_calendars" ("last_sync_at");

CREATE UNIQUE INDEX "event_calendar_memberships_invitation_token_key" ON "event_calendar_memberships" ("invitation_token");
CREATE UNIQUE INDEX "event_calendar_memberships_event_calendar_id_user_id_key" ON "event_calendar_memberships" ("event_calendar_id", "user_id");
CREATE UNIQUE INDEX "unique_pending_invitation" ON "event_calendar_memberships" ("event_calendar_id", "invited_email") WHERE "status" = 'pending';
CREATE INDEX "event_calendar_memberships_event_calendar_id_idx" ON "event_calendar_memberships" ("event_calendar_id");
CREATE INDEX "event_calendar_memberships_user_id_idx" ON "event_calendar_memberships" ("user_id");
CREATE INDEX "event_calendar_memberships_invited_email_idx" ON "event_calendar_memberships" ("invited_email");
CREATE INDEX "event_calendar_memberships_invitation_token_idx" ON "event_calendar_memberships" ("invitation_token");
CREATE INDEX "event_calendar_memberships_status_idx" ON "event_calendar_memberships" ("status");

CREATE UNIQUE INDEX "events_event_calendar_id_ics_uid_key" ON "events" ("event_calendar_id", "ics_uid");
CREATE INDEX "events_event_calendar_id_idx" ON "events" ("event_calendar_id");
CREATE INDEX "events_assigned_to_user_id_idx" ON "events" ("assigned_to_user_id");
CREATE INDEX "events_start_time_idx" ON "events" ("start_time");
CREATE INDEX "events_end_time_idx" ON "events" ("end_time");

CREATE INDEX "supplemental_events_parent_event_id_idx" ON "supplemental_events" ("parent_event_id");
CREATE INDEX "supplemental_events_type_idx" ON "supplemental_events" ("type");
CREATE INDEX "supplemental_events_start_time_idx" ON "supplemental_events" ("start_time");

CREATE UNIQUE INDEX "user_google_event_syncs_user_id_event_id_key" ON "user_google_event_syncs" ("user_id", "event_id");
CREATE UNIQUE INDEX "user_google_event_syncs_user_id_supplemental_event_id_key" ON "user_google_event_syncs" ("user_id", "supplemental_event_id");
CREATE INDEX "user_google_event_syncs_user_id_idx" ON "user_google_event_syncs" ("user_id");
CREATE INDEX "user_google_event_syncs_event_id_idx" ON "user_google_event_syncs" ("event_id");
CREATE INDEX "user_google_event_syncs_supplemental_event_id_idx" ON "user_google_event_syncs" ("supplemental_event_id");
CREATE INDEX "user_google_event_syncs_google_event_id_idx" ON "user_google_event_syncs" ("google_event_id");
CREATE INDEX "user_google_event_syncs_event_id_sync_type_idx" ON "user_google_event_syncs" ("event_id", "sync_type");
CREATE INDEX "user_google_event_syncs_supplemental_event_id_sync_type_idx" ON "user_google_event_syncs" ("supplemental_event_id", "sync_type");
CREATE INDEX "user_google_event_syncs_user_id_sync_type_idx" ON "user_google_event_syncs" ("user_id", "sync_type");

-- Foreign keys (Prisma's ON DELETE / ON UPDATE choices).
ALTER TABLE "event_calendars"
    ADD CONSTRAINT "event_calendars_child_id_fkey" FOREIGN KEY ("child_id") REFERENCES "children" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT "event_calendars_owner_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users" ("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "event_calendar_memberships"
    ADD CONSTRAINT "event_calendar_memberships_event_calendar_id_fkey" FOREIGN KEY ("event_calendar_id") REFERENCES "event_calendars" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT "event_calendar_memberships_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT "event_calendar_memberships_invited_by_user_id_fkey" FOREIGN KEY ("invited_by_user_id") REFERENCES "users" ("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "events"
    ADD CONSTRAINT "events_event_calendar_id_fkey" FOREIGN KEY ("event_calendar_id") REFERENCES "event_calendars" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT "events_assigned_to_user_id_fkey" FOREIGN KEY ("assigned_to_user_id") REFERENCES "users" ("id") ON DELETE SET NULL ON UPDATE CASCADE;
ALTER TABLE "supplemental_events"
    ADD CONSTRAINT "supplemental_events_parent_event_id_fkey" FOREIGN KEY ("parent_event_id") REFERENCES "events" ("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "user_google_event_syncs"
    ADD CONSTRAINT "user_google_event_syncs_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT "user_google_event_syncs_event_id_fkey" FOREIGN KEY ("event_id") REFERENCES "events" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT "user_google_event_syncs_supplemental_event_id_fkey" FOREIGN KEY ("supplemental_event_id") REFERENCES "supplemental_events" ("id") ON DELETE CASCADE ON UPDATE CASCADE;
