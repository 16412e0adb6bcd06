package gateway

import (
	"runtime"

	dto "github.com/prometheus/client_model/go"
)

// runtimeMemStats measures heap allocations over a span.
type runtimeMemStats struct{ before uint64 }

func (m *runtimeMemStats) start() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.before = s.Mallocs
}

func (m *runtimeMemStats) stop() uint64 {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	return s.Mallocs - m.before
}

func testutilValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
