package gateway

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks, after every test, that no goroutine outlived its sockets.
// The package's tests need no database: memberships are in memory.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goroutine leak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
