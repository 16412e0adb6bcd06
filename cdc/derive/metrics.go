package derive

import (
	"errors"

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
	skipOverflow     = "index_overflow"
	skipInvalidID    = "invalid_id"
)

type metrics struct {
	derived  *prometheus.CounterVec
	rejected *prometheus.CounterVec
	skipped  *prometheus.CounterVec
}

// newMetrics registers the deriver's metrics on reg; nil reg gives working
// but unregistered collectors. Collectors already registered (a second
// Deriver on the same registry) are shared rather than a panic.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		derived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_events_derived_total",
			Help: "Events derived from committed transactions, by event name.",
		}, []string{"event"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_emit_rejected_total",
			Help: "koordi_realtime.emit messages rejected, by reason.",
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_derive_skipped_total",
			Help: "Changes or events derivation skipped, by reason (unknown_table, index_overflow, invalid_id).",
		}, []string{"reason"}),
	}
	if reg != nil {
		m.derived = register(reg, m.derived)
		m.rejected = register(reg, m.rejected)
		m.skipped = register(reg, m.skipped)
	}
	// Every label exists from the start, so rates and absent() work before
	// the first occurrence.
	for _, n := range schema.Names {
		m.derived.WithLabelValues(n)
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	m.skipped.WithLabelValues(skipUnknownTable)
	m.skipped.WithLabelValues(skipOverflow)
	m.skipped.WithLabelValues(skipInvalidID)
	return m
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
