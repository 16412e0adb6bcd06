package gateway

import (
	"io"
	"runtime"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
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

func writeText(w io.Writer, mf *dto.MetricFamily) error {
	_, err := expfmt.MetricFamilyToText(w, mf)
	return err
}
