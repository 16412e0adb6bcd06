// Package sql holds the SQL this service runs against a Koordi database and
// the Go that applies it:
//
//   - koordi.sql: Koordi's own tables, as its Prisma migrations create them,
//     for development and tests ([Migrate], `koordi-realtime migrate`);
//   - setup.sql: the service's objects in an existing Koordi database —
//     REPLICA IDENTITY FULL on the watched tables, the schema
//     koordi_realtime with emit(room, event, payload) and the table
//     emitted it writes (only roles granted EXECUTE may emit) — plus the
//     publication ([Setup], `koordi-realtime setup`);
//   - demo.sql: a small demo family (users, a child, two calendars,
//     memberships, a week of events) for `koordi-realtime dev` ([SeedDemo],
//     idempotent), and [DemoStep], the writes of `dev --simulate`;
//   - [Preflight]: the checks `serve` and `tail` run before streaming, each
//     failing with a sentinel error and one line that says what to do.
//
// Everything here is idempotent and never alters Koordi's columns.
//
// The sub-package pgcluster starts throwaway PostgreSQL clusters for tests
// and for `koordi-realtime dev`.
package sql
