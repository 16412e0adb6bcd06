package cdc

import (
	"context"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// deriver is what the consumer needs of *derive.Deriver. The stream's own
// tests substitute a recorder to observe decoded transactions directly.
type deriver interface {
	Bootstrap(ctx context.Context, q derive.Querier) error
	Derive(tx *wal.Tx) []schema.Envelope
}

var _ deriver = (*derive.Deriver)(nil)

// State is the live membership view of the derivation state, safe for
// concurrent readers.
func (c *Consumer) State() *derive.State { return c.rules.State() }
