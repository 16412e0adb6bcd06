package main

import (
	"context"
	"errors"
)

func runConformance(_ context.Context, _ *environment, _ []string) error {
	return errors.New("conformance: not implemented yet")
}
