//go:build !linux

package raw

import (
	"context"
	"errors"
)

// The raw server is epoll-based: Linux only.

type pool struct{}

func startPool(Config) (*pool, error) { return nil, errors.New("raw: needs Linux (epoll)") }

func (*pool) close()       {}
func (*pool) sockets() int { return 0 }

func (*pool) run(context.Context, Plan) (Result, error) {
	return Result{}, errors.New("raw: needs Linux (epoll)")
}
