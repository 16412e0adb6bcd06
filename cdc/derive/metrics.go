package derive

import (
	"errors"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/koordi/koordi-realtime/schema"
)

// Reasons an emit message is rejected (label of koordi_emit_rejected_total).
const (
	rejectTooLarge  = "too_large"
	rejectMalformed = "malformed"
	rejectBadRoom   = "bad_room"
	rejectBadEvent  = "bad_event"
	rejectBadData   = "bad_data"
)

var rejectReasons = []string{rejectTooLarge, rejectMalformed, rejectBadRoom, rejectBadEvent, rejectBadData}

// Reasons a change or event is skipped (label of koordi_derive_skipped_total).
const (
	skipUnknownTable = "unknown_table"
	skipInvalidID    = "invalid_id"
	skipNoOldRow     = "no_old_row"
)

// emitLabel is the event label of koordi_events_derived_total for emitted
// events whose name is not in the catalogue: emit names come from SQL, and
// labelling by them would make the series count unbounded.
const emitLabel = "other"

type metrics struct {
	derivedBy map[string]prometheus.Counter // catalogue name (and emitLabel) → series
	derived   *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	skipped   *prometheus.CounterVec
}

// newMetrics registers the deriver's metrics on reg; nil reg gives working
// but unregistered collectors. Collectors already registered (a second
// Deriver on the same registry) are shared rather than a panic.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		derived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_events_derived_total",
			Help: "Events derived from committed transactions, by event name (\"other\": emitted names outside the catalogue).",
		}, []string{"event"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_emit_rejected_total",
			Help: "koordi_realtime.emit messages rejected, by reason.",
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_derive_skipped_total",
			Help: "Changes or events derivation skipped, by reason (unknown_table, invalid_id, no_old_row).",
		}, []string{"reason"}),
	}
	if reg != nil {
		m.derived = register(reg, m.derived)
		m.rejected = register(reg, m.rejected)
		m.skipped = register(reg, m.skipped)
	}
	// Every label exists from the start, so rates and absent() work before
	// the first occurrence.
	m.derivedBy = make(map[string]prometheus.Counter, len(schema.Names)+1)
	for _, n := range append(slices.Clip(schema.Names), emitLabel) {
		m.derivedBy[n] = m.derived.WithLabelValues(n)
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	m.skipped.WithLabelValues(skipUnknownTable)
	m.skipped.WithLabelValues(skipInvalidID)
	m.skipped.WithLabelValues(skipNoOldRow)
	return m
}

// countDerived counts one envelope of the named event.
func (m *metrics) countDerived(event string) {
	c, ok := m.derivedBy[event]
	if !ok {
		c = m.derivedBy[emitLabel]
	}
	c.Inc()
}

func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		panic(err) // a conflicting definition is a programming error
	}
	return c
}
