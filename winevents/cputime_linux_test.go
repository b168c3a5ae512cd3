package winevents

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system) the process has used:
// the benchmarks report events per CPU second besides wall time, because
// the build machine is shared and wall time counts time spent waiting.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
