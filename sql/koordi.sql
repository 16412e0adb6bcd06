-- Koordi's tables, as its Prisma schema creates them (quoted identifiers,
-- varchar(n), timestamptz(6), uuid ids), for development and tests.
-- Two conveniences Prisma does not add, so hand-written SQL stays short:
-- ids default to gen_random_uuid() and updated_at defaults to now().
-- Idempotent: every object is created only if missing.

CREATE TABLE IF NOT EXISTS "users" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "email" VARCHAR(255) NOT NULL,
    "name" VARCHAR(100) NOT NULL,
    "avatar_url" TEXT,
    "google_refresh_token_enc" TEXT,
    "google_calendar_id" VARCHAR(255),
    "google_calendar_sync_enabled" BOOLEAN NOT NULL DEFAULT false,
    "home_address" TEXT,
    "home_latitude" DECIMAL(10,8),
    "home_longitude" DECIMAL(11,8),
    "timezone" VARCHAR(50),
    "comfort_buffer_minutes" INTEGER NOT NULL DEFAULT 5,
    "keep_supplemental_events" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "users_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX IF NOT EXISTS "users_email_key" ON "users"("email");

CREATE TABLE IF NOT EXISTS "children" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "name" VARCHAR(50) NOT NULL,
    "photo_url" TEXT,
    "date_of_birth" DATE,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "children_pkey" PRIMARY KEY ("id")
);

CREATE TABLE IF NOT EXISTS "event_calendars" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "name" VARCHAR(100) NOT NULL,
    "ics_url" TEXT NOT NULL,
    "child_id" UUID NOT NULL,
    "owner_id" UUID NOT NULL,
    "color" VARCHAR(7) NOT NULL DEFAULT '#3B82F6',
    "sync_enabled" BOOLEAN NOT NULL DEFAULT true,
    "sync_in_progress" BOOLEAN NOT NULL DEFAULT false,
    "last_sync_at" TIMESTAMPTZ(6),
    "last_sync_status" VARCHAR(20) NOT NULL DEFAULT 'pending',
    "last_sync_error" TEXT,
    "google_calendar_watch_token" TEXT,
    "google_calendar_watch_expiry" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "event_calendars_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "event_calendars_child_id_fkey" FOREIGN KEY ("child_id")
        REFERENCES "children"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "event_calendars_owner_id_fkey" FOREIGN KEY ("owner_id")
        REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS "event_calendars_child_id_idx" ON "event_calendars"("child_id");
CREATE INDEX IF NOT EXISTS "event_calendars_owner_id_idx" ON "event_calendars"("owner_id");

CREATE TABLE IF NOT EXISTS "event_calendar_memberships" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "event_calendar_id" UUID NOT NULL,
    "user_id" UUID,
    "invited_email" VARCHAR(255) NOT NULL,
    "invitation_token" VARCHAR(255) NOT NULL,
    "status" VARCHAR(20) NOT NULL DEFAULT 'pending',
    "invited_by_user_id" UUID NOT NULL,
    "invited_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "responded_at" TIMESTAMPTZ(6),
    "expires_at" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "event_calendar_memberships_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "event_calendar_memberships_event_calendar_id_fkey" FOREIGN KEY ("event_calendar_id")
        REFERENCES "event_calendars"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "event_calendar_memberships_user_id_fkey" FOREIGN KEY ("user_id")
        REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "event_calendar_memberships_invited_by_user_id_fkey" FOREIGN KEY ("invited_by_user_id")
        REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "event_calendar_memberships_invitation_token_key"
    ON "event_calendar_memberships"("invitation_token");
CREATE UNIQUE INDEX IF NOT EXISTS "event_calendar_memberships_event_calendar_id_user_id_key"
    ON "event_calendar_memberships"("event_calendar_id", "user_id");
CREATE UNIQUE INDEX IF NOT EXISTS "unique_pending_invitation"
    ON "event_calendar_memberships"("event_calendar_id", "invited_email") WHERE "status" = 'pending';
CREATE INDEX IF NOT EXISTS "event_calendar_memberships_user_id_idx" ON "event_calendar_memberships"("user_id");
CREATE INDEX IF NOT EXISTS "event_calendar_memberships_invited_email_idx" ON "event_calendar_memberships"("invited_email");

CREATE TABLE IF NOT EXISTS "events" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "event_calendar_id" UUID NOT NULL,
    "ics_uid" VARCHAR(255) NOT NULL,
    "title" VARCHAR(255) NOT NULL,
    "description" TEXT,
    "location" TEXT,
    "location_lat" DECIMAL(10,8),
    "location_lng" DECIMAL(11,8),
    "start_time" TIMESTAMPTZ(6) NOT NULL,
    "end_time" TIMESTAMPTZ(6) NOT NULL,
    "is_all_day" BOOLEAN NOT NULL DEFAULT false,
    "is_skipped" BOOLEAN NOT NULL DEFAULT false,
    "is_cancelled" BOOLEAN NOT NULL DEFAULT false,
    "assigned_to_user_id" UUID,
    "sync_in_progress" BOOLEAN NOT NULL DEFAULT false,
    "version" INTEGER NOT NULL DEFAULT 1,
    "last_modified" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "events_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "events_event_calendar_id_fkey" FOREIGN KEY ("event_calendar_id")
        REFERENCES "event_calendars"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "events_assigned_to_user_id_fkey" FOREIGN KEY ("assigned_to_user_id")
        REFERENCES "users"("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS "events_event_calendar_id_ics_uid_key" ON "events"("event_calendar_id", "ics_uid");
CREATE INDEX IF NOT EXISTS "events_event_calendar_id_idx" ON "events"("event_calendar_id");
CREATE INDEX IF NOT EXISTS "events_assigned_to_user_id_idx" ON "events"("assigned_to_user_id");

CREATE TABLE IF NOT EXISTS "supplemental_events" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "parent_event_id" UUID NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "title" VARCHAR(255) NOT NULL,
    "start_time" TIMESTAMPTZ(6) NOT NULL,
    "end_time" TIMESTAMPTZ(6) NOT NULL,
    "origin_address" TEXT NOT NULL,
    "origin_lat" DECIMAL(10,8) NOT NULL,
    "origin_lng" DECIMAL(11,8) NOT NULL,
    "destination_address" TEXT NOT NULL,
    "destination_lat" DECIMAL(10,8) NOT NULL,
    "destination_lng" DECIMAL(11,8) NOT NULL,
    "drive_time_minutes" INTEGER NOT NULL,
    "last_traffic_check" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "supplemental_events_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "supplemental_events_parent_event_id_fkey" FOREIGN KEY ("parent_event_id")
        REFERENCES "events"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS "supplemental_events_parent_event_id_idx" ON "supplemental_events"("parent_event_id");
