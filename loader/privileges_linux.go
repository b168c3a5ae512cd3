package loader

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// CheckPrivileges says in one line what the process lacks to load and
// attach the program: root, or CAP_BPF (or CAP_SYS_ADMIN), CAP_NET_ADMIN
// and CAP_PERFMON. It returns nil when it cannot tell (the load then
// explains).
func CheckPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		return nil
	}
	const (
		capNetAdmin = 12
		capSysAdmin = 21
		capPerfmon  = 38
		capBPF      = 39
	)
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var missing []string
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("knockwatch run needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (missing %s): run it as root or as deploy/knockwatch.service",
		strings.Join(missing, ", "))
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps, err
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}
