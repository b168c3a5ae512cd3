// Package zeekconn holds knockwatch's touches against Zeek's conn.log,
// connection by connection: it reads Zeek's TSV logs (the btest baselines
// of zeek/zeek kept under testdata/zeek, and the hand-written expectations
// in the same format), maps each TCP connection's conn_state to the touch
// knockwatch must report for it, and compares that with the touches an
// engine reported, with an explicit table of the differences that are on
// purpose. docs/DETECTION.md describes the corpus and the rules.
package zeekconn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Conn is one connection of a conn.log.
type Conn struct {
	UID        string
	Orig, Resp netip.AddrPort // id.orig_h:id.orig_p -> id.resp_h:id.resp_p
	Proto      string         // tcp, udp, icmp, unknown_transport
	State      string         // conn_state
	History    string         // history ("" when the log has none)
	Line       int            // line number in the log
}

func (c Conn) String() string {
	h := c.History
	if h == "" {
		h = "-"
	}
	return fmt.Sprintf("%s -> %s %s %s (line %d)", c.Orig, c.Resp, c.State, h, c.Line)
}

// fieldAliases are the names Zeek's Log::default_field_name_map gives
// the id fields in the baselines that rename them (the logging
// framework's field-name-map tests): the same column under another name.
var fieldAliases = map[string]string{
	"src_ip": "id.orig_h", "src_port": "id.orig_p",
	"dst_ip": "id.resp_h", "dst_port": "id.resp_p",
	"id_orig_h": "id.orig_h", "id_orig_p": "id.orig_p",
	"id_resp_h": "id.resp_h", "id_resp_p": "id.resp_p",
}

// ReadLog reads the conn.log at path.
func ReadLog(path string) ([]Conn, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read conn.log: %w", err)
	}
	defer f.Close()
	conns, err := ParseLog(f)
	if err != nil {
		return nil, fmt.Errorf("read conn.log %s: %w", path, err)
	}
	return conns, nil
}

// ParseLog reads a Zeek conn.log in its TSV form: "#" lines are headers
// (#separator, #fields, #unset_field are read, the others skipped), every
// other line one connection with the fields #fields names. A log without
// #fields, a row with the wrong number of columns or a connection without
// a readable 4-tuple or conn_state is an error naming the line.
func ParseLog(r io.Reader) ([]Conn, error) {
	sep := "\t"
	unset := "-"
	col := map[string]int{}
	var nfields int
	var out []Conn
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "#") {
			switch {
			case strings.HasPrefix(text, "#separator "):
				s, err := unescapeSeparator(strings.TrimPrefix(text, "#separator "))
				if err != nil {
					return nil, fmt.Errorf("line %d: %w", line, err)
				}
				sep = s
			case strings.HasPrefix(text, "#unset_field"+sep):
				unset = strings.TrimPrefix(text, "#unset_field"+sep)
			case strings.HasPrefix(text, "#fields"+sep):
				names := strings.Split(strings.TrimPrefix(text, "#fields"+sep), sep)
				col = map[string]int{}
				for i, n := range names {
					if a, ok := fieldAliases[n]; ok {
						n = a
					}
					col[n] = i
				}
				nfields = len(names)
				for _, need := range []string{"id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "conn_state"} {
					if _, ok := col[need]; !ok {
						return nil, fmt.Errorf("line %d: #fields has no %s", line, need)
					}
				}
			}
			continue
		}
		if nfields == 0 {
			return nil, fmt.Errorf("line %d: a connection before the #fields header", line)
		}
		v := strings.Split(text, sep)
		if len(v) != nfields {
			return nil, fmt.Errorf("line %d: %d fields, #fields names %d", line, len(v), nfields)
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && v[i] != unset {
				return v[i]
			}
			return ""
		}
		c := Conn{UID: get("uid"), Proto: get("proto"), State: get("conn_state"), History: get("history"), Line: line}
		var err error
		if c.Orig, err = addrPort(get("id.orig_h"), get("id.orig_p")); err != nil {
			return nil, fmt.Errorf("line %d: originator: %w", line, err)
		}
		if c.Resp, err = addrPort(get("id.resp_h"), get("id.resp_p")); err != nil {
			return nil, fmt.Errorf("line %d: responder: %w", line, err)
		}
		if c.Proto == "" {
			return nil, fmt.Errorf("line %d: no proto", line)
		}
		if c.Proto == "tcp" && c.State == "" {
			return nil, fmt.Errorf("line %d: a tcp connection without conn_state", line)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if nfields == 0 {
		return nil, errors.New("no #fields header: not a Zeek TSV log")
	}
	return out, nil
}

// unescapeSeparator reads #separator's value: Zeek writes it as \x09.
func unescapeSeparator(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			n, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return "", fmt.Errorf("#separator %q: %w", s, err)
			}
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("#separator %q: empty", s)
	}
	return b.String(), nil
}

func addrPort(h, p string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.AddrPort{}, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", p, err)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(n)), nil
}
