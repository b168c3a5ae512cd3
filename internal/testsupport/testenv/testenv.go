// Package testenv gates tests that need root, BPF or network namespaces.
package testenv

import (
	"os"
	"strings"
	"testing"
)

// RequirePrivilegedEnv names the variable that turns a missing privilege into
// a test failure instead of a skip. CI sets it.
const RequirePrivilegedEnv = "KNOCKWATCH_REQUIRE_PRIVILEGED"

// RequirePrivileged skips t when the process is not root, unless
// KNOCKWATCH_REQUIRE_PRIVILEGED is set, in which case t fails.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequirePrivilegedEnv) != "" {
		t.Fatalf("test needs root (CAP_BPF, CAP_NET_ADMIN) and %s is set", RequirePrivilegedEnv)
	}
	t.Skipf("test needs root (CAP_BPF, CAP_NET_ADMIN); set %s=1 to make this a failure", RequirePrivilegedEnv)
}

// GrepLines returns the lines of text that contain sub, for a failure
// message that shows only what matters (a metrics scrape, a log).
func GrepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
