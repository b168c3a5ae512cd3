package archtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/knockwatch/knockwatch/"

// pkg is what `go list -json` says of a package (the fields used here).
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// goList lists every package of the module with its direct imports and its
// dependencies (test files excluded, as in a build).
func goList(t *testing.T) map[string]pkg {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
		if _, serr := os.Stat(goBin); serr != nil {
			t.Fatalf("no go command to run go list: %v", err)
		}
	}
	cmd := exec.Command(goBin, "list", "-json", "-deps=false", "github.com/knockwatch/knockwatch/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(p.ImportPath, module)] = p
	}
	return pkgs
}

// rules reads the table of import rules from docs/ARCHITECTURE.md:
// package -> the module packages it may import.
func rules(t *testing.T) map[string]map[string]bool {
	t.Helper()
	f, err := os.Open("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]bool{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "| package | may import |":
			in = true
			continue
		case !in:
			continue
		case !strings.HasPrefix(line, "|"):
			in = false
			continue
		case strings.HasPrefix(line, "|---"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 2 {
			t.Fatalf("ARCHITECTURE.md: bad rule row %q", line)
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		allowed := map[string]bool{}
		list, _, _ := strings.Cut(strings.TrimSpace(cells[1]), "(")
		for _, a := range strings.Split(list, ",") {
			if a = strings.TrimSpace(a); a != "" && a != "—" {
				allowed[a] = true
			}
		}
		out[name] = allowed
	}
	if len(out) == 0 {
		t.Fatal("ARCHITECTURE.md has no table of import rules (| package | may import |)")
	}
	return out
}

// TestImportRules: every package has a row in the doc's table, every row a
// package, and no package imports a module package its row does not name.
func TestImportRules(t *testing.T) {
	pkgs := goList(t)
	rs := rules(t)
	for name := range pkgs {
		if _, ok := rs[name]; !ok {
			t.Errorf("package %s has no row in docs/ARCHITECTURE.md's import rules", name)
		}
	}
	for name, allowed := range rs {
		p, ok := pkgs[name]
		if !ok {
			t.Errorf("docs/ARCHITECTURE.md names package %s, which does not exist", name)
			continue
		}
		for a := range allowed {
			if _, ok := pkgs[a]; !ok {
				t.Errorf("docs/ARCHITECTURE.md: %s may import %s, which does not exist", name, a)
			}
		}
		var bad []string
		for _, imp := range p.Imports {
			if dep, ok := strings.CutPrefix(imp, module); ok && !allowed[dep] {
				bad = append(bad, dep)
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("%s imports %v, which docs/ARCHITECTURE.md does not allow it", name, bad)
		}
	}
}

// kernelSide are the modules that speak to the kernel's BPF and netlink.
var kernelSide = []string{"github.com/cilium/ebpf", "github.com/vishvananda/netlink", "github.com/vishvananda/netns"}

func isKernelSide(path string) bool {
	for _, k := range kernelSide {
		if path == k || strings.HasPrefix(path, k+"/") {
			return true
		}
	}
	return false
}

// TestPureGo: the packages below the kernel line depend on neither
// cilium/ebpf nor netlink, even indirectly, and only loader (BPF, netlink)
// and internal/netns (netlink) import them directly.
func TestPureGo(t *testing.T) {
	pkgs := goList(t)
	for _, name := range []string{"sensor", "gotwin", "pipeline", "correlate", "coverage", "winevents", "winevents/intake", "alert",
		"internal/config", "internal/metrics", "scaleout"} {
		p, ok := pkgs[name]
		if !ok {
			t.Errorf("no package %s", name)
			continue
		}
		for _, d := range p.Deps {
			if isKernelSide(d) {
				t.Errorf("%s depends on %s", name, d)
			}
		}
	}
	direct := map[string]bool{"loader": true, "internal/netns": true}
	for name, p := range pkgs {
		for _, imp := range p.Imports {
			if isKernelSide(imp) && !direct[name] {
				t.Errorf("%s imports %s directly: only loader and internal/netns speak to the kernel", name, imp)
			}
		}
	}
}

// TestNoFakeBrokerInBinary: the fake Kafka cluster (kfake, internal/
// kafkatest) is a development tool for tests and `make demo-cluster`; the
// product binary never links it.
func TestNoFakeBrokerInBinary(t *testing.T) {
	p, ok := goList(t)["cmd/knockwatch"]
	if !ok {
		t.Fatal("no package cmd/knockwatch")
	}
	for _, d := range p.Deps {
		if strings.HasPrefix(d, "github.com/twmb/franz-go/pkg/kfake") || strings.HasSuffix(d, "/internal/kafkatest") {
			t.Errorf("cmd/knockwatch depends on %s", d)
		}
	}
}
