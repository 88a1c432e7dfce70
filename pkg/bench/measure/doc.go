// Package measure holds the figures every benchmark of fleetgate-bench takes
// and the units they print in: latency histograms (HdrHistogram, 1 µs to
// 5 minutes) and their summary, a process's CPU time and resident memory read
// from /proc, this process's open-file limit, and the formats of rates,
// counts, durations and bytes that the reports and the progress lines share.
//
// It imports no package of fleetgate.
package measure
