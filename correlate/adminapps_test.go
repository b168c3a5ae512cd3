package correlate

import (
	"strings"
	"testing"
)

// Admin applications are matched by location, never by a name anyone can
// give a renamed tool.
func TestAdminApplicationsMatchByLocation(t *testing.T) {
	cases := []struct {
		entry string
		app   string
		want  bool
	}{
		// base names: only below the administrators-only roots
		{"ccmexec.exe", `C:\Windows\CCM\CcmExec.exe`, true},
		{"ccmexec.exe", `C:\Program Files\CCM\ccmexec.exe`, true},
		{"ccmexec.exe", `C:\Users\Public\Downloads\ccmexec.exe`, false},
		{"ccmexec.exe", `C:\ProgramData\ccmexec.exe`, false},
		{"ccmexec.exe", `D:\Windows\CCM\CcmExec.exe`, false},
		{"ccmexec.exe", `C:\Windows\Temp\ccmexec.exe`, false},            // every user can write there
		{"ccmexec.exe", `C:\Windows\System32\Tasks\ccmexec.exe`, false},  // idem
		{"ccmexec.exe", `C:\Windows\..\Users\Public\ccmexec.exe`, false}, // dot-dot out of the root
		{"ccmexec.exe", `C:\Windows\CCM\ccmexec.exe.`, true},             // Windows drops trailing dots
		{"ccmexec.exe", `C:\Windows\CCM\ccmexec.exe::$DATA`, true},
		{"ccmexec.exe", `ccmexec.exe`, false}, // no path: cannot tell where it is
		{"ccmexec.exe", `C:\Windows\CCM\other.exe`, false},
		// full paths: that file only, in any notation
		{`C:\Windows\CCM\CcmExec.exe`, `c:/windows/ccm/ccmexec.exe`, true},
		{`%SystemRoot%\CCM\CcmExec.exe`, `C:\Windows\CCM\CcmExec.exe`, true},
		{`%windir%\CCM\CcmExec.exe`, `\\?\C:\Windows\CCM\CcmExec.exe`, true},
		{`C:\Windows\CCM\CcmExec.exe`, `C:\Windows\CCM\Sub\CcmExec.exe`, false},
		{`C:\Windows\CCM\CcmExec.exe`, `C:\Users\Public\Downloads\ccmexec.exe`, false},
		{`C:\Tools\admin.exe`, `C:\Tools\admin.exe`, true}, // an explicit full path is the operator's choice
		// directories under the roots
		{`%ProgramFiles%\Tanium\`, `C:\Program Files\Tanium\Tanium Client\TaniumClient.exe`, true},
		{`C:\Program Files\Tanium\*`, `C:\Program Files\Tanium\x.exe`, true},
		{`C:\Program Files\Tanium\`, `C:\Program Files\TaniumEvil\x.exe`, false},
		{`C:\Program Files\Tanium\`, `C:\Program Files\Tanium\..\..\Users\x.exe`, false},
	}
	for _, c := range cases {
		m, err := compileAdminApps([]string{c.entry})
		if err != nil {
			t.Fatalf("%s: %v", c.entry, err)
		}
		if got := m.match(c.app); got != c.want {
			t.Errorf("entry %q, application %q: match %v, want %v", c.entry, c.app, got, c.want)
		}
	}
}

func TestAdminApplicationsRefused(t *testing.T) {
	for _, e := range []string{`C:\Users\Public\`, `C:\Windows\Temp\`, `Tanium\client.exe`, `%TEMP%\x.exe`, `C:\Tools\*`, `a*b.exe`} {
		if _, err := compileAdminApps([]string{e}); err == nil {
			t.Errorf("%q accepted", e)
		} else if !strings.Contains(err.Error(), "admin application") {
			t.Errorf("%q: %v", e, err)
		}
	}
}

// The renamed tool end to end in the engine: the documented example entry
// suppresses the real agent and not the attacker's copy of its name.
func TestRenamedToolNotSuppressed(t *testing.T) {
	for _, c := range []struct {
		app, want string
	}{
		{`C:\Users\Public\Downloads\ccmexec.exe`, "created high"},
		{`C:\Windows\CCM\CcmExec.exe`, "created high suppressed:admin_actor"},
	} {
		e, col := newTestEngine(t, func(cfg *Config) {
			cfg.EmitSuppressed = true
			cfg.Suppression.AdminApplications = []string{"ccmexec.exe"}
		})
		ch := ruleAdded(chAt, Ports(22), 1)
		ch.ModifyingApplication = c.app
		feed(t, e, knock3(), ch, handshakeAt(attacker, victim, 22, ackAt))
		if got := summary(col.all()); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %q, want %q", c.app, got, c.want)
		}
	}
}
