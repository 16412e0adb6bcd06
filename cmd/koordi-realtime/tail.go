package main

import (
	"context"
	"errors"
)

func runTail(_ context.Context, _ *environment, _ []string) error {
	return errors.New("tail: not implemented yet")
}
