package correlate

import (
	"fmt"
	"strings"
)

// Administrative applications are matched by where they are, never by
// their name alone: anyone who can write a file can name it ccmexec.exe,
// so a base name would let an attacker borrow the suppression by renaming
// its tool (C:\Users\Public\Downloads\ccmexec.exe). An entry is one of:
//
//   - a full path (C:\Windows\CCM\CcmExec.exe, %ProgramFiles%\Tanium\
//     Tanium Client\TaniumClient.exe): that file only;
//   - a directory under %SystemRoot% or %ProgramFiles% (ending in \ or
//     \*): any program below it;
//   - a base name (ccmexec.exe): that name only below %SystemRoot%,
//     %ProgramFiles% or %ProgramFiles(x86)%, which only administrators can
//     write.
//
// Both sides are normalised the same way: case-folded, / as \, the
// environment variables Windows writes expanded (%SystemRoot%, %windir%,
// %ProgramFiles%, %ProgramFiles(x86)%, %ProgramW6432%, %SystemDrive%,
// %ProgramData%), \\?\ and \??\ prefixes dropped, . and .. resolved, and
// the trailing dots and spaces Windows ignores in a name removed. Under
// C:\Windows a few directories are writable by every user (Temp, Tasks,
// tracing, spool, ...); nothing in them is covered by a directory or base
// name entry. A path that cannot be normalised (relative, an unknown
// variable, an 8.3 short name that is not in the entry) matches nothing.

// winRoots are the directories only administrators can write.
var winRoots = []string{`c:\windows\`, `c:\program files\`, `c:\program files (x86)\`}

// winWritable are directories under the roots that every user can write
// (well-known AppLocker bypass locations): never trusted by a directory or
// base-name entry.
var winWritable = []string{
	`c:\windows\temp\`, `c:\windows\tasks\`, `c:\windows\tracing\`, `c:\windows\debug\`,
	`c:\windows\registration\crmlog\`, `c:\windows\system32\tasks\`, `c:\windows\system32\tasks_migrated\`,
	`c:\windows\syswow64\tasks\`, `c:\windows\system32\spool\`, `c:\windows\system32\com\dmp\`,
	`c:\windows\syswow64\com\dmp\`, `c:\windows\system32\fxstmp\`, `c:\windows\syswow64\fxstmp\`,
	`c:\windows\system32\microsoft\crypto\rsa\machinekeys\`, `c:\windows\servicing\sessions\`,
	`c:\windows\system32\logfiles\`, `c:\windows\serviceprofiles\`,
}

var winVars = map[string]string{
	"%systemroot%":        `c:\windows`,
	"%windir%":            `c:\windows`,
	"%programfiles%":      `c:\program files`,
	"%programw6432%":      `c:\program files`,
	"%programfiles(x86)%": `c:\program files (x86)`,
	"%systemdrive%":       `c:`,
	"%programdata%":       `c:\programdata`,
}

// normWinPath normalises an absolute Windows path (see above); ok is false
// when p is not one.
func normWinPath(p string) (string, bool) {
	p = strings.ToLower(strings.Trim(strings.TrimSpace(p), `"`))
	p = strings.ReplaceAll(p, "/", `\`)
	for _, pre := range []string{`\\?\`, `\??\`, `\\.\`} {
		p = strings.TrimPrefix(p, pre)
	}
	if strings.HasPrefix(p, "%") {
		end := strings.IndexByte(p[1:], '%')
		if end < 0 {
			return "", false
		}
		v, ok := winVars[p[:end+2]]
		if !ok {
			return "", false
		}
		p = v + p[end+2:]
	}
	if strings.Contains(p, "%") {
		return "", false
	}
	if len(p) < 3 || p[1] != ':' || p[2] != '\\' || p[0] < 'a' || p[0] > 'z' {
		return "", false
	}
	p, _, _ = strings.Cut(p, "::") // alternate data stream (x.exe::$DATA)
	var out []string
	for _, seg := range strings.Split(p[3:], `\`) {
		switch strings.TrimRight(seg, " ") {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		if seg = strings.TrimRight(seg, ". "); seg == "" {
			return "", false // "..." and the like: not a name
		}
		if strings.ContainsAny(seg, `:*?"<>|`) {
			return "", false
		}
		out = append(out, seg)
	}
	return p[:3] + strings.Join(out, `\`), true
}

// underRoot reports whether the normalised path p is below an
// administrators-only root and not in a user-writable directory there.
func underRoot(p string) bool {
	for _, w := range winWritable {
		if strings.HasPrefix(p+`\`, w) {
			return false
		}
	}
	for _, r := range winRoots {
		if strings.HasPrefix(p, r) {
			return true
		}
	}
	return false
}

// appMatcher is AdminApplications compiled.
type appMatcher struct {
	paths map[string]bool
	dirs  []string // normalised, ending in \
	names map[string]bool
}

func (m *appMatcher) empty() bool {
	return m == nil || len(m.paths) == 0 && len(m.dirs) == 0 && len(m.names) == 0
}

func compileAdminApps(entries []string) (*appMatcher, error) {
	m := &appMatcher{paths: map[string]bool{}, names: map[string]bool{}}
	for _, raw := range entries {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		if !strings.ContainsAny(e, `\/`) {
			name := strings.TrimRight(strings.ToLower(strings.Trim(e, `"`)), ". ")
			if name == "" || strings.ContainsAny(name, `:*?"<>|%`) {
				return nil, fmt.Errorf("admin application %q: not a file name", raw)
			}
			m.names[name] = true
			continue
		}
		dir := strings.HasSuffix(e, `\`) || strings.HasSuffix(e, "/") || strings.HasSuffix(e, `\*`) || strings.HasSuffix(e, "/*")
		p, ok := normWinPath(strings.TrimSuffix(strings.TrimSuffix(e, "*"), "*"))
		if !ok {
			return nil, fmt.Errorf("admin application %q: not a full path (X:\\..., or %%SystemRoot%%\\... / %%ProgramFiles%%\\...), a directory under them, or a file name", raw)
		}
		if dir {
			if !underRoot(p) {
				return nil, fmt.Errorf("admin application %q: a directory must be under %%SystemRoot%% or %%ProgramFiles%% (and not one every user can write, such as C:\\Windows\\Temp): elsewhere anyone who can write there could borrow the suppression; list full paths instead", raw)
			}
			m.dirs = append(m.dirs, p+`\`)
			continue
		}
		m.paths[p] = true
	}
	return m, nil
}

// match reports whether app (a ModifyingApplication) is covered.
func (m *appMatcher) match(app string) bool {
	if m.empty() || app == "" {
		return false
	}
	p, ok := normWinPath(app)
	if !ok {
		return false
	}
	if m.paths[p] {
		return true
	}
	if !underRoot(p) {
		return false
	}
	for _, d := range m.dirs {
		if strings.HasPrefix(p, d) {
			return true
		}
	}
	return m.names[p[strings.LastIndexByte(p, '\\')+1:]]
}
