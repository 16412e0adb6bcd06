package main

import (
	"context"
	"errors"
)

func runServe(_ context.Context, _ *environment, _ []string) error {
	return errors.New("serve: not implemented yet")
}
