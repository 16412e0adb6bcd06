package stats

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits is the number of mantissa bits kept below a value's leading one:
// 2^subBits buckets per power of two.
const subBits = 7

const (
	subCount = 1 << subBits
	// Values below subCount are exact; above, 64-subBits exponents.
	nBuckets = (64 - subBits + 1) * subCount
)

// Histogram counts non-negative int64 samples (nanoseconds, by convention).
// The zero value is ready; it is safe for concurrent use.
type Histogram struct {
	counts [nBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
	min    atomic.Int64 // stored as value+1 so zero means unset
}

func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // shift that leaves subBits+1 bits
	return (e+1)*subCount + int(uint64(v)>>uint(e)) - subCount
}

// lowerBound is the smallest value bucket b holds.
func lowerBound(b int) int64 {
	if b < subCount {
		return int64(b)
	}
	e := b/subCount - 1
	return int64(subCount+b%subCount) << uint(e)
}

// Record adds one sample; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the sample at quantile q in [0, 1] by nearest rank,
// reported as the middle of its bucket (clamped to the exact min and max).
func (h *Histogram) Quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return h.min.Load() - 1
	}
	if q >= 1 {
		return h.max.Load()
	}
	rank := uint64(q*float64(n) + 0.9999999) // ceil, nearest-rank definition
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			lo := lowerBound(b)
			hi := lowerBound(b+1) - 1
			if b+1 >= nBuckets || hi < lo { // the top bucket ends at MaxInt64
				hi = h.max.Load()
			}
			v := lo + (hi-lo)/2
			return min(max(v, h.min.Load()-1), h.max.Load())
		}
	}
	return h.max.Load()
}

// Summary is a histogram's digest in durations.
type Summary struct {
	Count uint64        `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Summarize digests h.
func (h *Histogram) Summarize() Summary {
	n := h.n.Load()
	s := Summary{Count: n}
	if n == 0 {
		return s
	}
	s.Mean = time.Duration(h.sum.Load() / n)
	s.P50 = time.Duration(h.Quantile(0.50))
	s.P90 = time.Duration(h.Quantile(0.90))
	s.P99 = time.Duration(h.Quantile(0.99))
	s.P999 = time.Duration(h.Quantile(0.999))
	s.Max = time.Duration(h.max.Load())
	return s
}

// Counts is a histogram's samples as a report keeps them: its non-empty
// buckets and exact extremes, so that the histograms of several runs, read
// back from their reports, can be pooled into one (Histogram.Add).
type Counts struct {
	// SubBits is the layout the bucket indices are of (subBits).
	SubBits int         `json:"sub_bits"`
	Buckets [][2]uint64 `json:"buckets"` // bucket index, samples
	Sum     uint64      `json:"sum_ns"`
	Min     int64       `json:"min_ns"`
	Max     int64       `json:"max_ns"`
}

// Counts is h's samples; nil if it has none.
func (h *Histogram) Counts() *Counts {
	if h.n.Load() == 0 {
		return nil
	}
	c := &Counts{SubBits: subBits, Sum: h.sum.Load(), Min: h.min.Load() - 1, Max: h.max.Load()}
	for b := range h.counts {
		if n := h.counts[b].Load(); n > 0 {
			c.Buckets = append(c.Buckets, [2]uint64{uint64(b), n})
		}
	}
	return c
}

// Add records c's samples in h, as if each had been recorded in it.
// Counts of another layout, or a bucket index out of range, is an error,
// and h is left as it was.
func (h *Histogram) Add(c *Counts) error {
	if c == nil {
		return nil
	}
	if c.SubBits != subBits {
		return fmt.Errorf("stats: counts of %d sub-bucket bits, this histogram has %d", c.SubBits, subBits)
	}
	for _, b := range c.Buckets {
		if b[0] >= nBuckets {
			return fmt.Errorf("stats: bucket %d out of range (%d buckets)", b[0], nBuckets)
		}
	}
	var n uint64
	for _, b := range c.Buckets {
		h.counts[b[0]].Add(b[1])
		n += b[1]
	}
	if n == 0 {
		return nil
	}
	h.n.Add(n)
	h.sum.Add(c.Sum)
	for {
		m := h.max.Load()
		if c.Max <= m || h.max.CompareAndSwap(m, c.Max) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && c.Min+1 >= m) || h.min.CompareAndSwap(m, c.Min+1) {
			break
		}
	}
	return nil
}
