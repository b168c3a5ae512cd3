// Package testenv gates tests that need root, BPF or network namespaces.
package testenv

import (
	"os"
	"os/exec"
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

// RequireTool returns the path of an external program a test runs (a real
// client, a renderer, a checker). A missing tool skips t, unless
// KNOCKWATCH_REQUIRE_PRIVILEGED is set (CI): then t fails, naming the
// Debian package to install.
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(RequirePrivilegedEnv) != "" {
		t.Fatalf("%s is required (apt-get install %s) and %s is set", name, debianPackage, RequirePrivilegedEnv)
	}
	t.Skipf("%s not installed (apt-get install %s)", name, debianPackage)
	return ""
}
