//go:build linux

package clusterlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one `knockwatch run` of a cluster: its JSON log, its alert
// lines on stdout, its metrics address.
type Process struct {
	Name string
	cmd  *exec.Cmd
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu      sync.Mutex
	logs    bytes.Buffer
	alerts  []string
	metrics string
	ready   chan struct{}
	exited  chan struct{}
	err     error
}

var (
	metricsRE = regexp.MustCompile(`"msg":"serving /metrics.*"addr":"([0-9.:]+)"`)
	readyRE   = regexp.MustCompile(`"msg":"ready`)
)

// StartProcess starts cmd (a `knockwatch run` with --log-format json and
// --metrics) and follows its output. dial reaches its metrics address
// (nil: net.Dialer; a namespace's Dial otherwise).
func StartProcess(name string, cmd *exec.Cmd, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Process, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	p := &Process{Name: name, cmd: cmd, dial: dial, ready: make(chan struct{}), exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		readyOnce := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			if m := metricsRE.FindStringSubmatch(line); m != nil {
				p.metrics = m[1]
			}
			p.mu.Unlock()
			if !readyOnce && readyRE.MatchString(line) {
				readyOnce = true
				close(p.ready)
			}
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.alerts = append(p.alerts, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		wg.Wait()
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

// WaitReady waits for the process's "ready" log line.
func (p *Process) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited before it was ready: %v\n%s", p.Name, p.err, p.Logs())
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w\n%s", p.Name, ctx.Err(), p.Logs())
	}
}

// Logs returns what the process logged so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Find returns the first submatches of re in the process's log so far
// (nil: none yet).
func (p *Process) Find(re *regexp.Regexp) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return re.FindStringSubmatch(p.logs.String())
}

// Alerts returns the lines it wrote on stdout (a correlator's committed
// alerts).
func (p *Process) Alerts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.alerts...)
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL (kill -9) and waits for the exit.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM and waits up to timeout, then kills.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v (killed)", p.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return p.err
	}
	return nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Scrape returns the process's /metrics text.
func (p *Process) Scrape(ctx context.Context) (string, error) {
	p.mu.Lock()
	addr := p.metrics
	p.mu.Unlock()
	if addr == "" {
		return "", fmt.Errorf("%s serves no metrics", p.Name)
	}
	cl := &http.Client{Transport: &http.Transport{DialContext: p.dial}, Timeout: 5 * time.Second}
	defer cl.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return "", fmt.Errorf("scrape %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Metric returns the sum of the samples of a metric whose labels contain
// every label="value" given (scraped now).
func (p *Process) Metric(ctx context.Context, name string, labels ...string) (float64, error) {
	b, err := p.Scrape(ctx)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(b, "\n") {
		if !strings.HasPrefix(line, name) || len(line) <= len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("%s exposes no %s{%s}", p.Name, name, strings.Join(labels, ","))
	}
	return sum, nil
}

// WaitMetric waits until the metric reaches at least want.
func (p *Process) WaitMetric(ctx context.Context, want float64, name string, labels ...string) (float64, error) {
	for {
		v, err := p.Metric(ctx, name, labels...)
		if err == nil && v >= want {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%s: %s{%s} is %v, want at least %v: %w", p.Name, name, strings.Join(labels, ","), v, want, errors.Join(ctx.Err(), err))
		case <-p.exited:
			return v, fmt.Errorf("%s exited: %v\n%s", p.Name, p.err, p.Logs())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
