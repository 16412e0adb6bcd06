-- A small demo family for `koordi-realtime dev`: four people, one child, two
-- shared calendars and a week of events around the day it is first seeded.
-- Idempotent: fixed ids and ON CONFLICT DO NOTHING, so a second run changes
-- nothing (and keeps whatever the simulator or you changed since).
--
--   Alex Rivera  — parent, owns "Maya · School", member of both calendars
--   Sam Rivera   — parent, owns "Maya · Soccer", member of both calendars
--   Jordan Lee   — grandparent, member of "Maya · Soccer" only
--   Casey Kim    — babysitter, no calendar yet (the simulator invites them)

INSERT INTO users (id, email, name, timezone) VALUES
  ('d1000000-0000-4000-8000-000000000001', 'alex@demo.koordi.app',   'Alex Rivera', 'America/Los_Angeles'),
  ('d1000000-0000-4000-8000-000000000002', 'sam@demo.koordi.app',    'Sam Rivera',  'America/Los_Angeles'),
  ('d1000000-0000-4000-8000-000000000003', 'jordan@demo.koordi.app', 'Jordan Lee',  'America/Los_Angeles'),
  ('d1000000-0000-4000-8000-000000000004', 'casey@demo.koordi.app',  'Casey Kim',   'America/Los_Angeles')
ON CONFLICT DO NOTHING;

INSERT INTO children (id, name, date_of_birth) VALUES
  ('d2000000-0000-4000-8000-000000000001', 'Maya', '2016-04-12')
ON CONFLICT DO NOTHING;

INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id, color, last_sync_status, last_sync_at) VALUES
  ('d3000000-0000-4000-8000-000000000001', 'Maya · School', 'https://calendar.example.com/maya-school.ics',
   'd2000000-0000-4000-8000-000000000001', 'd1000000-0000-4000-8000-000000000001', '#3B82F6', 'success', now()),
  ('d3000000-0000-4000-8000-000000000002', 'Maya · Soccer', 'https://calendar.example.com/maya-soccer.ics',
   'd2000000-0000-4000-8000-000000000001', 'd1000000-0000-4000-8000-000000000002', '#10B981', 'success', now())
ON CONFLICT DO NOTHING;

INSERT INTO event_calendar_memberships
  (id, event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id, responded_at) VALUES
  ('d4000000-0000-4000-8000-000000000001', 'd3000000-0000-4000-8000-000000000001', 'd1000000-0000-4000-8000-000000000001',
   'alex@demo.koordi.app', 'demo-school-alex', 'accepted', 'd1000000-0000-4000-8000-000000000001', now()),
  ('d4000000-0000-4000-8000-000000000002', 'd3000000-0000-4000-8000-000000000001', 'd1000000-0000-4000-8000-000000000002',
   'sam@demo.koordi.app', 'demo-school-sam', 'accepted', 'd1000000-0000-4000-8000-000000000001', now()),
  ('d4000000-0000-4000-8000-000000000003', 'd3000000-0000-4000-8000-000000000002', 'd1000000-0000-4000-8000-000000000002',
   'sam@demo.koordi.app', 'demo-soccer-sam', 'accepted', 'd1000000-0000-4000-8000-000000000002', now()),
  ('d4000000-0000-4000-8000-000000000004', 'd3000000-0000-4000-8000-000000000002', 'd1000000-0000-4000-8000-000000000001',
   'alex@demo.koordi.app', 'demo-soccer-alex', 'accepted', 'd1000000-0000-4000-8000-000000000002', now()),
  ('d4000000-0000-4000-8000-000000000005', 'd3000000-0000-4000-8000-000000000002', 'd1000000-0000-4000-8000-000000000003',
   'jordan@demo.koordi.app', 'demo-soccer-jordan', 'accepted', 'd1000000-0000-4000-8000-000000000002', now())
ON CONFLICT DO NOTHING;

-- A week of school runs (drop-off and pick-up on weekdays) and soccer
-- (practice Tuesday and Thursday, a match on Saturday), starting today.
-- Event ids are derived from the ics_uid so they are the same on every seed.
INSERT INTO events (id, event_calendar_id, ics_uid, title, location, start_time, end_time, assigned_to_user_id)
SELECT md5(e.ics_uid)::uuid, e.cal, e.ics_uid, e.title, e.location, e.start_time, e.start_time + e.length, e.assignee
FROM (
  SELECT 'd3000000-0000-4000-8000-000000000001'::uuid AS cal,
         'demo-school-' || k.kind || '-' || d AS ics_uid,
         k.title, 'Lincoln Elementary, 123 Oak St' AS location,
         date_trunc('day', now()) + d * interval '1 day' + k.at AS start_time,
         interval '30 minutes' AS length,
         CASE WHEN d % 3 = 0 THEN NULL
              WHEN k.kind = 'dropoff' THEN 'd1000000-0000-4000-8000-000000000001'::uuid
              ELSE 'd1000000-0000-4000-8000-000000000002'::uuid END AS assignee,
         extract(isodow FROM date_trunc('day', now()) + d * interval '1 day') AS dow
  FROM generate_series(0, 6) AS d,
       (VALUES ('dropoff', 'School drop-off', interval '8 hours'),
               ('pickup',  'School pick-up',  interval '15 hours')) AS k(kind, title, at)
  UNION ALL
  SELECT 'd3000000-0000-4000-8000-000000000002'::uuid,
         'demo-soccer-' || d,
         CASE WHEN extract(isodow FROM date_trunc('day', now()) + d * interval '1 day') = 6 THEN 'Soccer match' ELSE 'Soccer practice' END,
         'Riverside Park, Field 3',
         date_trunc('day', now()) + d * interval '1 day' + interval '17 hours',
         interval '90 minutes',
         CASE WHEN d % 2 = 0 THEN 'd1000000-0000-4000-8000-000000000003'::uuid ELSE NULL END,
         extract(isodow FROM date_trunc('day', now()) + d * interval '1 day')
  FROM generate_series(0, 6) AS d
) AS e
WHERE (e.cal = 'd3000000-0000-4000-8000-000000000001' AND e.dow BETWEEN 1 AND 5)
   OR (e.cal = 'd3000000-0000-4000-8000-000000000002' AND e.dow IN (2, 4, 6))
ON CONFLICT DO NOTHING;
