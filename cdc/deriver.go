package cdc

import (
	"context"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// deriver is what the consumer needs of *derive.Deriver; the stream's own
// tests build a consumer around a recorder of decoded transactions instead
// (see newConsumer).
type deriver interface {
	Bootstrap(ctx context.Context, q derive.Querier) error
	Derive(tx *wal.Tx) schema.Transaction
	State() *derive.State
}

var _ deriver = (*derive.Deriver)(nil)
