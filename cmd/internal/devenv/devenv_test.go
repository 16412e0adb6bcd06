package devenv

import (
	"runtime"
	"strconv"
	"testing"
)

func TestCoLocatedGOMAXPROCS(t *testing.T) {
	cpus := runtime.GOMAXPROCS(0)
	for _, tc := range []struct {
		nodes   int
		environ []string
		want    string
	}{
		{1, nil, "GOMAXPROCS=" + strconv.Itoa(cpus)},
		{2, []string{"PATH=/bin"}, "GOMAXPROCS=" + strconv.Itoa(max(1, cpus/2))},
		{cpus + 1, nil, "GOMAXPROCS=1"}, // never zero: more nodes than CPUs
		{0, nil, "GOMAXPROCS=" + strconv.Itoa(cpus)},
		{3, []string{"GOMAXPROCS=4"}, ""}, // the operator's own setting stands
		{3, []string{"GOMAXPROCSX=1", "XGOMAXPROCS=1"}, "GOMAXPROCS=" + strconv.Itoa(max(1, cpus/3))},
	} {
		if got := CoLocatedGOMAXPROCS(tc.nodes, tc.environ); got != tc.want {
			t.Errorf("CoLocatedGOMAXPROCS(%d, %q) = %q, want %q", tc.nodes, tc.environ, got, tc.want)
		}
	}
}
