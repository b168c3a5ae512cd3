package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxFileBytes bounds a configuration file.
const MaxFileBytes = 4 << 20

// Error is a configuration file error at a line and key path.
type Error struct {
	File string
	Line int    // 0 when unknown
	Path string // dotted key path, "" for the document
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadFile reads the YAML file at path over the defaults.
func LoadFile(path string) (Config, error) {
	cfg := Default()
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return cfg, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return cfg, &Error{File: path, Msg: fmt.Sprintf("file larger than %d bytes", MaxFileBytes)}
	}
	if err := Parse(data, path, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Parse reads YAML data (named name in errors) into cfg, over what cfg
// already holds: keys absent from data keep their value. Unknown keys and
// values of the wrong type are errors with the line and key path.
func Parse(data []byte, name string, cfg *Config) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: defaults
		}
		return syntaxError(name, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return syntaxError(name, err)
		}
		return &Error{File: name, Line: more.Line, Msg: "more than one YAML document"}
	}
	lines := map[int]string{}
	if err := checkKeys(name, &doc, reflect.TypeOf(*cfg), "", lines, 0); err != nil {
		return err
	}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(cfg); err != nil {
		return typeError(name, err, lines)
	}
	return nil
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	timeType     = reflect.TypeOf(time.Time{})
	lineRE       = regexp.MustCompile(`^line (\d+): (.*)$`)
)

const maxDepth = 32

// checkKeys walks the document against the struct type t and reports the
// first unknown key or misplaced node, recording each value's line and path
// for typeError.
func checkKeys(file string, n *yaml.Node, t reflect.Type, path string, lines map[int]string, depth int) error {
	if depth > maxDepth {
		return &Error{File: file, Line: n.Line, Path: path, Msg: "nested too deeply"}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkKeys(file, c, t, path, lines, depth+1); err != nil {
				return err
			}
		}
		return nil
	case yaml.AliasNode:
		return &Error{File: file, Line: n.Line, Path: path, Msg: "YAML aliases are not supported"}
	}
	if _, ok := lines[n.Line]; !ok && path != "" {
		lines[n.Line] = path
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	switch {
	case t == durationType || t == timeType:
		if n.Kind != yaml.ScalarNode {
			return &Error{File: file, Line: n.Line, Path: path, Msg: "expected a single value"}
		}
		if t == durationType {
			if _, err := time.ParseDuration(n.Value); err != nil {
				return &Error{File: file, Line: n.Line, Path: path,
					Msg: fmt.Sprintf("invalid duration %q (write it with a unit, e.g. 30s, 5m, 250ms)", n.Value)}
			}
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &Error{File: file, Line: n.Line, Path: path, Msg: "expected a mapping of keys"}
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			p := join(path, k.Value)
			if !ok {
				return &Error{File: file, Line: k.Line, Path: p, Msg: "unknown key (known: " + knownKeys(fields) + ")"}
			}
			lines[k.Line] = p
			if err := checkKeys(file, v, f.Type, p, lines, depth+1); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return &Error{File: file, Line: n.Line, Path: path, Msg: "expected a mapping"}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			lines[n.Content[i].Line] = p
			if err := checkKeys(file, n.Content[i+1], t.Elem(), p, lines, depth+1); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return &Error{File: file, Line: n.Line, Path: path, Msg: "expected a list"}
		}
		for i, c := range n.Content {
			if err := checkKeys(file, c, t.Elem(), path+"["+strconv.Itoa(i)+"]", lines, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return &Error{File: file, Line: n.Line, Path: path, Msg: "expected a single value"}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the yaml keys of struct t to their fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

func knownKeys(fields map[string]reflect.StructField) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// syntaxError turns a yaml.v3 parse error ("yaml: line 3: ...") into an
// Error with the line.
func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Msg: m[2]}
	}
	return &Error{File: file, Msg: msg}
}

// typeError rewrites yaml.v3's "line N: cannot unmarshal ..." with the key
// path of that line.
func typeError(file string, err error, lines map[int]string) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return syntaxError(file, err)
	}
	var errs []error
	for _, e := range te.Errors {
		m := lineRE.FindStringSubmatch(e)
		if m == nil {
			errs = append(errs, &Error{File: file, Msg: e})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		errs = append(errs, &Error{File: file, Line: line, Path: lines[line], Msg: m[2]})
	}
	return errors.Join(errs...)
}
