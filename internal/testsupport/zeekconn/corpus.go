package zeekconn

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Case is one trace of the corpus (a line of testdata/zeek/corpus.tsv).
type Case struct {
	Trace    string // path under <dir>/traces, as under Zeek's testing/btest/Traces
	Expected string // conn.log it is held to, relative to <dir>
	// ZeekTests names the btest(s) behind the expectation ("" for a
	// trace no Zeek test reads, whose log is hand-written).
	ZeekTests []string
	// IgnoreChecksums: Zeek ran with -C, so it also used segments with
	// a bad TCP checksum.
	IgnoreChecksums bool
}

// ReadCorpus reads dir/corpus.tsv: tab-separated trace, expected,
// zeek_test (comma-separated, "-" for none) and zeek_flags ("-C" or "-");
// "#" lines are comments. Every file a line names must exist.
func ReadCorpus(dir string) ([]Case, error) {
	path := filepath.Join(dir, "corpus.tsv")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read corpus: %w", err)
	}
	defer f.Close()
	var out []Case
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		v := strings.Split(text, "\t")
		if len(v) != 4 {
			return nil, fmt.Errorf("read corpus %s:%d: %d columns, want 4 (trace, expected, zeek_test, zeek_flags)", path, line, len(v))
		}
		c := Case{Trace: v[0], Expected: v[1]}
		if v[2] != "-" {
			c.ZeekTests = strings.Split(v[2], ",")
		}
		switch v[3] {
		case "-C":
			c.IgnoreChecksums = true
		case "-":
		default:
			return nil, fmt.Errorf("read corpus %s:%d: zeek_flags %q, want -C or -", path, line, v[3])
		}
		if seen[c.Trace] {
			return nil, fmt.Errorf("read corpus %s:%d: %s listed twice", path, line, c.Trace)
		}
		seen[c.Trace] = true
		for _, p := range []string{filepath.Join(dir, "traces", c.Trace), filepath.Join(dir, c.Expected)} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("read corpus %s:%d: %w", path, line, err)
			}
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read corpus %s: %w", path, err)
	}
	return out, nil
}
