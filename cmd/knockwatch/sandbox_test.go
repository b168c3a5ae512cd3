//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

const unitFile = "../../deploy/knockwatch.service"

// TestServiceUnitExposure: systemd's own assessment of deploy/knockwatch.service
// (systemd-analyze security, offline: no PID 1 needed) stays at or below
// 3.0 — everything it flags that the sensor does not need is switched off.
func TestServiceUnitExposure(t *testing.T) {
	analyze := testenv.RequireTool(t, "systemd-analyze", "systemd")
	out, err := exec.Command(analyze, "security", "--offline=true", "--no-pager", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for knockwatch\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if score > 3.0 {
		t.Errorf("exposure %.1f, want <= 3.0:\n%s", score, out)
	}
	t.Logf("exposure level %.1f", score)
}

// unitSandbox is what TestRunUnderServiceSandbox applies of the unit: the
// system calls its SystemCallFilter= lines allow (resolved with systemd's
// own group definitions), the socket families of RestrictAddressFamilies=,
// the capability bounding set, and no_new_privs.
type unitSandbox struct {
	Syscalls []uint32 `json:"syscalls"`
	Families []uint32 `json:"families"`
	Caps     []uint   `json:"caps"`
}

// unitDirectives returns the values of key in the [Service] section, in
// order.
func unitDirectives(t *testing.T, key string) []string {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// syscallGroups parses `systemd-analyze syscall-filter`: every @group with
// its members (system calls and nested groups).
func syscallGroups(t *testing.T) map[string][]string {
	t.Helper()
	analyze := testenv.RequireTool(t, "systemd-analyze", "systemd")
	out, err := exec.Command(analyze, "syscall-filter", "--no-pager").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	cur := ""
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.TrimSpace(l)
		switch {
		case f == "":
			cur = ""
		case strings.HasPrefix(l, "@"):
			cur = f
		case cur != "" && !strings.HasPrefix(f, "#"):
			groups[cur] = append(groups[cur], f)
		}
	}
	if len(groups["@system-service"]) == 0 {
		t.Fatalf("could not read systemd's syscall groups:\n%.500s", out)
	}
	return groups
}

func expand(groups map[string][]string, name string, into map[string]bool, seen map[string]bool) {
	if !strings.HasPrefix(name, "@") {
		into[name] = true
		return
	}
	if seen[name] {
		return
	}
	seen[name] = true
	for _, m := range groups[name] {
		expand(groups, m, into, seen)
	}
}

// allowedSyscalls applies systemd's rules for SystemCallFilter= lines: the
// first line decides allow-list or deny-list; later lines of the same kind
// add, of the other kind remove.
func allowedSyscalls(t *testing.T, lines []string, groups map[string][]string) map[string]bool {
	t.Helper()
	if len(lines) == 0 || strings.HasPrefix(lines[0], "~") {
		t.Fatalf("the unit's SystemCallFilter= must start with an allow-list, got %q", lines)
	}
	allowed := map[string]bool{}
	for _, l := range lines {
		deny := strings.HasPrefix(l, "~")
		set := map[string]bool{}
		for _, name := range strings.Fields(strings.TrimPrefix(l, "~")) {
			expand(groups, name, set, map[string]bool{})
		}
		for name := range set {
			if deny {
				delete(allowed, name)
			} else {
				allowed[name] = true
			}
		}
	}
	return allowed
}

// syscallNumbers reads the x86-64 system call table from the kernel
// headers (Debian linux-libc-dev).
func syscallNumbers(t *testing.T) map[string]uint32 {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Fatalf("the sandbox test knows the x86-64 system call table only (GOARCH %s)", runtime.GOARCH)
	}
	var b []byte
	var err error
	for _, p := range []string{"/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"} {
		if b, err = os.ReadFile(p); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("read the system call table (apt-get install linux-libc-dev): %v", err)
	}
	out := map[string]uint32{}
	for _, m := range regexp.MustCompile(`(?m)^#define __NR_(\w+) (\d+)$`).FindAllSubmatch(b, -1) {
		n, _ := strconv.ParseUint(string(m[2]), 10, 32)
		out[string(m[1])] = uint32(n)
	}
	if len(out) < 300 {
		t.Fatalf("system call table has %d entries", len(out))
	}
	return out
}

var capNames = map[string]uint{"CAP_BPF": unix.CAP_BPF, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_PERFMON": unix.CAP_PERFMON,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN}

var familyNames = map[string]uint32{"AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6, "AF_NETLINK": unix.AF_NETLINK, "AF_UNIX": unix.AF_UNIX}

// sandboxFromUnit resolves the unit's restrictions into numbers.
func sandboxFromUnit(t *testing.T) (unitSandbox, []string) {
	t.Helper()
	allowed := allowedSyscalls(t, unitDirectives(t, "SystemCallFilter"), syscallGroups(t))
	nums := syscallNumbers(t)
	var sb unitSandbox
	var names []string
	for name := range allowed {
		if n, ok := nums[name]; ok { // names of other architectures have no number here
			sb.Syscalls = append(sb.Syscalls, n)
			names = append(names, name)
		}
	}
	sort.Slice(sb.Syscalls, func(i, j int) bool { return sb.Syscalls[i] < sb.Syscalls[j] })
	sort.Strings(names)
	for _, v := range unitDirectives(t, "RestrictAddressFamilies") {
		for _, f := range strings.Fields(v) {
			n, ok := familyNames[f]
			if !ok {
				t.Fatalf("RestrictAddressFamilies: %s unknown to the test", f)
			}
			sb.Families = append(sb.Families, n)
		}
	}
	for _, v := range unitDirectives(t, "CapabilityBoundingSet") {
		for _, c := range strings.Fields(v) {
			n, ok := capNames[c]
			if !ok {
				t.Fatalf("CapabilityBoundingSet: %s unknown to the test", c)
			}
			sb.Caps = append(sb.Caps, n)
		}
	}
	if len(sb.Families) == 0 || len(sb.Caps) == 0 {
		t.Fatal("the unit restricts no address families or capabilities")
	}
	return sb, names
}

// seccomp_data offsets and return values (linux/seccomp.h, linux/audit.h).
const (
	offNr          = 0
	offArch        = 4
	offArg0        = 16
	auditArchX8664 = 0xc000003e
	retAllow       = 0x7fff0000
	retTrap        = 0x00030000 // SIGSYS: the Go runtime prints where it happened
	retErrno       = 0x00050000
	x32Bit         = 0x40000000
)

// seccompProgram builds the filter systemd would: native architecture
// only, the allowed system calls, socket() only for the allowed families
// (others fail with EAFNOSUPPORT, as systemd's RestrictAddressFamilies=
// does); any other call is trapped.
func seccompProgram(sb unitSandbox) ([]bpf.RawInstruction, error) {
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArchX8664, SkipTrue: 1},
		bpf.RetConstant{Val: retTrap},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: x32Bit, SkipFalse: 1},
		bpf.RetConstant{Val: retTrap},
	}
	// socket(family, ...): check the family first.
	fam := []bpf.Instruction{bpf.LoadAbsolute{Off: offArg0, Size: 4}}
	for _, f := range sb.Families {
		fam = append(fam, bpf.JumpIf{Cond: bpf.JumpEqual, Val: f, SkipFalse: 1}, bpf.RetConstant{Val: retAllow})
	}
	fam = append(fam, bpf.RetConstant{Val: retErrno | uint32(unix.EAFNOSUPPORT)})
	prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_SOCKET, SkipFalse: uint8(len(fam))})
	prog = append(prog, fam...)
	for _, n := range sb.Syscalls {
		if n == unix.SYS_SOCKET {
			continue
		}
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: n, SkipFalse: 1}, bpf.RetConstant{Val: retAllow})
	}
	prog = append(prog, bpf.RetConstant{Val: retTrap})
	return bpf.Assemble(prog)
}

// sandboxEnv carries the sandbox to the helper process (TestMain).
const sandboxEnv = "KNOCKWATCH_SANDBOX"

// enterSandboxAndExec is the helper side: on one OS thread it drops every
// capability outside the unit's bounding set, sets no_new_privs, installs
// the filter and execs the test binary again as `knockwatch run` (the
// helperEnv arguments), so the whole sensor runs under the unit's
// restrictions from its first instruction, as under systemd.
func enterSandboxAndExec() {
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		os.Exit(3)
	}
	var sb unitSandbox
	if err := json.Unmarshal([]byte(os.Getenv(sandboxEnv)), &sb); err != nil {
		fail(err)
	}
	runtime.LockOSThread()
	last, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		fail(err)
	}
	lastCap, _ := strconv.Atoi(strings.TrimSpace(string(last)))
	for c := 0; c <= lastCap; c++ {
		if !slices.Contains(sb.Caps, uint(c)) {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				fail(fmt.Errorf("drop capability %d: %w", c, err))
			}
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail(err)
	}
	raw, err := seccompProgram(sb)
	if err != nil {
		fail(err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		fail(fmt.Errorf("install seccomp filter: %w", err))
	}
	env := slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, sandboxEnv+"=") })
	fail(syscall.Exec(os.Args[0], os.Args, env))
}

// TestRunUnderServiceSandbox runs the end-to-end scenario (knock, firewall
// event, first handshake, one high alert, metrics, SIGTERM) with the
// sensor confined as deploy/knockwatch.service confines it: only the
// system calls its SystemCallFilter= allows (resolved with this machine's
// systemd groups; any other call kills the process with SIGSYS), socket()
// only for its RestrictAddressFamilies=, the capability bounding set of
// CapabilityBoundingSet= (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) and
// no_new_privs. The BPF map fill-level metrics must be exported under
// those three capabilities. (Mount-namespace settings such as
// ProtectSystem= and ProtectKernelTunables= need systemd itself; see
// docs/CONFIG.md for what the sensor reads and writes.)
func TestRunUnderServiceSandbox(t *testing.T) {
	testenv.RequirePrivileged(t)
	sb, names := sandboxFromUnit(t)
	if !slices.Contains(names, "bpf") || slices.Contains(names, "reboot") || slices.Contains(names, "mount") {
		t.Fatalf("resolved filter looks wrong (bpf allowed: %v)", slices.Contains(names, "bpf"))
	}
	spec, err := json.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d system calls allowed, families %v, capabilities %v", len(sb.Syscalls), sb.Families, sb.Caps)
	var bnd uint64
	for _, c := range sb.Caps {
		bnd |= 1 << c
	}
	text := runEndToEnd(t, "kwsandbox", []string{sandboxEnv + "=" + string(spec)}, func(pid int) {
		// The sensor that runs is the confined one.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Seccomp:\t2\n", "NoNewPrivs:\t1\n", fmt.Sprintf("CapBnd:\t%016x\n", bnd)} {
			if !strings.Contains(string(st), want) {
				t.Errorf("sensor process (pid %d) lacks %q:\n%s", pid, want, st)
			}
		}
	})
	for _, want := range []string{"knockwatch_bpf_map_entries{", "knockwatch_bpf_map_fill_ratio{", "knockwatch_bpf_counters_up 1"} {
		if !strings.Contains(text, want) {
			t.Errorf("under the unit's capabilities the scrape lacks %s", want)
		}
	}
	// The helper really was confined: a filter that forbids what the
	// sensor needs must kill it (so the pass above means something).
	t.Run("filter bites", func(t *testing.T) {
		strict := sb
		strict.Syscalls = slices.DeleteFunc(slices.Clone(sb.Syscalls), func(n uint32) bool { return n == unix.SYS_BPF })
		spec, _ := json.Marshal(strict)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), sandboxEnv+"="+string(spec), helperEnv+"="+strings.Join([]string{
			"--iface", "lo", "--xdp-mode", "generic", "--log-format", "json"}, "\x1f"))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "SIGSYS") {
			t.Errorf("without bpf() allowed the sensor did not die of SIGSYS: %v\n%.2000s", err, out)
		}
	})
}
