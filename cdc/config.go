package cdc

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	ksql "github.com/koordi/koordi-realtime/sql"
)

// Config configures a [Consumer]. The zero value of every field but
// ConnString is a documented default.
type Config struct {
	// ConnString is Koordi's DATABASE_URL. The consumer adds
	// replication=database, TimeZone=UTC and DateStyle=ISO itself.
	ConnString string
	// SlotName is the logical replication slot; default "koordi_realtime".
	// Lower-case letters, digits and underscores, as PostgreSQL requires.
	SlotName string
	// Publication is the publication to stream; default "koordi_realtime".
	Publication string
	// Retain makes the confirmed position trail the newest handed-off
	// commit by this long, so a restarted process decodes that window
	// again (the replay window). 0 confirms on hand-off.
	Retain time.Duration
	// StatusInterval is the period of standby status updates; default 10s.
	// Keep it well below PostgreSQL's wal_sender_timeout/2 (30 s by
	// default), or the server times the connection out or keeps asking for
	// replies, which are answered ignoring Retain (see the package doc);
	// each session caps it at a quarter of its wal_sender_timeout.
	StatusInterval time.Duration
	// SpillBytes is how much of one transaction's decoded changes is held
	// in memory; past it the transaction goes to a temporary file in
	// SpillDir (default: the system's temporary directory) until its
	// commit, so a bulk UPDATE costs disk, not memory. Default 1 MiB
	// (about 650 rows of Koordi's events, old and new values: a calendar
	// sync stays in memory). The transactions waiting for delivery hold
	// at most 64 MiB in memory together.
	SpillBytes int
	SpillDir   string
	// BulkEvents bounds the events one transaction gives one room: a room
	// that would get more gets one sync:reset {reason: "bulk_change"} in
	// their place (BULK_EVENTS). Default 1,000; negative: no bound.
	BulkEvents int
	// CheckInterval is how often the watched tables are checked (in the
	// publication, replica identity FULL), besides at every stream start;
	// default 30s.
	CheckInterval time.Duration
	// OnReset, if set, is called when changes may have been lost: the slot
	// was invalidated by PostgreSQL ("slot_invalidated"), vanished while
	// streaming ("slot_recreated"), was dropped to stream past a publication
	// dropped and created again ("publication_recreated"), or did not exist
	// at the first start ("slot_created": for sessions of an earlier
	// process); or a watched table the publication had lost is back
	// ("publication_changed"). Everything
	// before the gap has been given to the sink when it is called (an
	// AsyncSink may still be acknowledging it) and nothing after it yet;
	// serve wires it to the gateway's sync:reset, or in a cluster to the
	// feed. Called from the stream goroutine, or for "publication_changed"
	// and for gaps recorded in the stream (RecordGap; any reason, when the
	// Sink is not a GapSink) from the delivery goroutine between two
	// transactions; it must not block for long (a cluster's blocks only
	// when its term is ending: a failed publish, then RecordGap).
	OnReset func(reason string)
	// GapKey, when set, is the secret that signs and verifies gaps recorded
	// in the stream (Consumer.RecordGap): the same on every consumer of the
	// slot, at least 32 bytes. Without it RecordGap fails and no recorded
	// gap is trusted.
	GapKey []byte
	// OnStream, if set, is called each time streaming starts or resumes
	// (once PostgreSQL has accepted the start), before any transaction of
	// that session is delivered, with the position from which it streams.
	// On the first start every transaction committed after it will be
	// delivered (again, if it was before a restart); on a resume within the
	// process, those already handed off are skipped. serve tells the
	// gateway, so sessions that began in a previous process can recover at
	// once. Called from the stream goroutine; it must not block for long.
	OnStream func(from uint64)
	// LockKey, when non-zero, makes the consumer one of several candidates
	// for the slot (several nodes): every session first takes the advisory
	// lock pg_try_advisory_lock(LockKey) on its own replication connection,
	// which holds it for exactly as long as it streams and loses it with the
	// connection, however the process ends. While another session holds
	// it the consumer stands by, trying again every StandbyRetry on the same
	// replication connection (a fresh session, with its checks, every
	// minute; never two backends a try). Once it
	// has led, the end of its session ends Run with ErrLostLeadership:
	// another node may stream meanwhile, so the next term starts with a new
	// consumer and a fresh state.
	LockKey      int64
	StandbyRetry time.Duration // default 500ms
	// OnLeading, if set, is called with true when the consumer takes the
	// lock and with false when it stands by or loses it.
	OnLeading func(leading bool)
	// WalSenderTimeout, if set, is the replication connection's
	// wal_sender_timeout: how soon PostgreSQL ends the session — and frees
	// the slot and the lock — of a consumer whose host vanished without
	// closing its connection. The status interval stays under a quarter
	// of it.
	WalSenderTimeout time.Duration
	// Logger receives one line per state change; nil discards.
	Logger *slog.Logger
	// Registerer receives the consumer's metrics; nil registers none.
	Registerer prometheus.Registerer
}

const (
	defaultSlot           = "koordi_realtime"
	defaultPublication    = "koordi_realtime"
	defaultStatusInterval = 10 * time.Second
	defaultCheckInterval  = 30 * time.Second
)

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (c *Config) fill() error {
	if c.ConnString == "" {
		return fmt.Errorf("%w: empty connection string", ErrConfig)
	}
	if c.SlotName == "" {
		c.SlotName = defaultSlot
	}
	if !slotNameRE.MatchString(c.SlotName) {
		return fmt.Errorf("%w: slot name %q: use 1-63 lower-case letters, digits and underscores", ErrConfig, c.SlotName)
	}
	if c.Publication == "" {
		c.Publication = defaultPublication
	}
	if c.Retain < 0 {
		return fmt.Errorf("%w: negative retain %s", ErrConfig, c.Retain)
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = defaultStatusInterval
	}
	if c.SpillBytes <= 0 {
		c.SpillBytes = 1 << 20
	}
	if c.BulkEvents == 0 {
		c.BulkEvents = 1000
	}
	if c.StandbyRetry <= 0 {
		c.StandbyRetry = 500 * time.Millisecond
	}
	if c.WalSenderTimeout < 0 {
		return fmt.Errorf("%w: negative wal_sender_timeout %s", ErrConfig, c.WalSenderTimeout)
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = defaultCheckInterval
	}
	if len(c.GapKey) > 0 && len(c.GapKey) < 32 {
		return fmt.Errorf("%w: gap key of %d bytes: at least 32 are required", ErrConfig, len(c.GapKey))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Errors the user must fix; [Consumer.Run] returns them (wrapped) instead of
// retrying. [IsConfigError] also covers the preflight sentinels of package
// sql (wal_level, missing tables, replica identity, publication, emit).
var (
	// ErrConfig is an invalid Config.
	ErrConfig = errors.New("invalid cdc configuration")
	// ErrUnreachable means the database could not be reached at the first
	// start. Later connection losses are retried, never returned.
	ErrUnreachable = errors.New("cannot connect to PostgreSQL")
	// ErrSlotActive means another process streams from the slot.
	ErrSlotActive = errors.New("replication slot is in use by another process")
	// ErrSlotConflict means the slot exists for another database or
	// output plugin, or is a physical slot.
	ErrSlotConflict = errors.New("replication slot exists with other settings")
	// ErrLostLeadership ends Run when a consumer that held the leader
	// lock (Config.LockKey) lost its session.
	ErrLostLeadership = errors.New("lost the leader lock")
)

// errStandby: another session holds the leader lock.
var errStandby = errors.New("another session holds the leader lock")

// IsConfigError reports whether err is something the user must fix
// (configuration, database setup, a slot used elsewhere) rather than a
// failure while running.
func IsConfigError(err error) bool {
	for _, target := range []error{
		ErrConfig, ErrUnreachable, ErrSlotActive, ErrSlotConflict,
		ksql.ErrWALLevel, ksql.ErrMissingTable, ksql.ErrReplicaIdentity,
		ksql.ErrNoPublication, ksql.ErrNoEmitFunction,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
