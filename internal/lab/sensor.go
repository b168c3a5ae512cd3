//go:build linux

package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
)

// sensor is `knockwatch run` running as a child process inside the sensor
// namespace, its alerts read from its standard output.
type sensor struct {
	cmd  *exec.Cmd
	logs *tail

	onAlert func(json.RawMessage)
	mu      sync.Mutex
	alerts  []json.RawMessage
	newOne  chan struct{} // closed and replaced on every alert
	outErr  error         // why the alert stream ended early

	exited  chan struct{}
	exitErr error

	client     *http.Client // dials inside the sensor namespace
	metricsURL string
	readyURL   string
}

// startSensor starts bin with args in ns. Alerts (JSON objects on its
// standard output) go to onAlert as they arrive; its log lines (standard
// error) are kept and also copied to logTo when it is not nil.
func startSensor(ns *netns.Namespace, bin string, args []string, metricsAddr string,
	onAlert func(json.RawMessage), logTo io.Writer) (*sensor, error) {
	// Not CommandContext: the sensor is stopped with SIGTERM so that it
	// detaches and flushes, never killed outright unless it hangs.
	cmd := ns.Command(context.Background(), bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C on the terminal reaches the lab,
		// which stops the sensor in order.
		Setpgid: true,
		// Should the lab die without stopping it, the sensor stops too.
		Pdeathsig: syscall.SIGTERM,
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start sensor: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start sensor: %w", err)
	}
	s := &sensor{cmd: cmd, logs: newTail(200), onAlert: onAlert, newOne: make(chan struct{}), exited: make(chan struct{})}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, network, addr)
		},
		DisableKeepAlives: true,
	}
	s.client = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	s.metricsURL = "http://" + metricsAddr + "/metrics"
	s.readyURL = "http://" + metricsAddr + "/readyz"
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sensor %s: %w", bin, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.readAlerts(stdout)
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.logs.add(sc.Text())
			if logTo != nil {
				fmt.Fprintf(logTo, "sensor| %s\n", sc.Text())
			}
		}
	}()
	go func() {
		wg.Wait() // the pipes are read to the end before Wait closes them
		s.exitErr = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// readAlerts reads the alerts the sensor writes to its standard output:
// one JSON object per line, or indented over several lines. A line that
// cannot start or continue an object is logged, not taken for an alert.
func (s *sensor) readAlerts(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxAlertBytes)
	var pending []byte
	for sc.Scan() {
		line := sc.Bytes()
		if len(pending) == 0 {
			trimmed := bytes.TrimSpace(line)
			if len(trimmed) == 0 {
				continue
			}
			if trimmed[0] != '{' {
				s.logs.add("stdout: " + string(line))
				continue
			}
		}
		pending = append(pending, line...)
		pending = append(pending, '\n')
		if err := json.Unmarshal(pending, new(json.RawMessage)); err != nil {
			var se *json.SyntaxError
			truncated := errors.As(err, &se) && se.Offset >= int64(len(pending))
			if truncated && len(pending) <= maxAlertBytes {
				continue // an indented object, not complete yet
			}
			s.logs.add(fmt.Sprintf("stdout: not an alert (%v): %.200s", err, pending))
			s.setOutErr(fmt.Errorf("read alerts from the sensor: %w", err))
			pending = nil
			continue
		}
		raw := json.RawMessage(bytes.TrimSpace(pending))
		pending = nil
		if s.onAlert != nil {
			s.onAlert(raw)
		}
		s.mu.Lock()
		s.alerts = append(s.alerts, raw)
		close(s.newOne)
		s.newOne = make(chan struct{})
		s.mu.Unlock()
	}
	if err := sc.Err(); err != nil {
		s.setOutErr(fmt.Errorf("read alerts from the sensor: %w", err))
		// Keep the pipe drained so the sensor never blocks on it.
		_, _ = io.Copy(io.Discard, r)
	}
	if len(pending) > 0 {
		s.setOutErr(fmt.Errorf("read alerts from the sensor: output ended inside an object: %.200s", pending))
	}
}

// maxAlertBytes bounds one alert object on the sensor's output.
const maxAlertBytes = 4 << 20

func (s *sensor) setOutErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outErr == nil {
		s.outErr = err
	}
}

// snapshot returns the alerts so far and a channel closed at the next one.
func (s *sensor) snapshot() ([]json.RawMessage, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]json.RawMessage(nil), s.alerts...), s.newOne, s.outErr
}

// waitReady polls /readyz until it answers 200, the sensor exits or ctx
// ends.
func (s *sensor) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.readyURL, nil)
		if err != nil {
			return fmt.Errorf("wait for sensor: %w", err)
		}
		resp, err := s.client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-s.exited:
			return fmt.Errorf("sensor exited before it was ready (%v)", s.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("wait for sensor /readyz (last answer: %s): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

// metrics scrapes the sensor's /metrics.
func (s *sensor) metrics(ctx context.Context) (Metrics, error) {
	return scrape(ctx, s.client, s.metricsURL)
}

// stop sends SIGTERM (the sensor detaches from its interfaces and flushes
// its alerts), waits up to grace, then kills it.
func (s *sensor) stop(grace time.Duration) error {
	select {
	case <-s.exited:
		return s.exitResult()
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.exitResult()
	case <-time.After(grace):
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("stop sensor: still running %v after SIGTERM, killed", grace)
}

func (s *sensor) exitResult() error {
	if s.exitErr != nil {
		return fmt.Errorf("sensor exited: %w", s.exitErr)
	}
	return nil
}

// tail keeps the last n lines written to it.
type tail struct {
	mu    sync.Mutex
	n     int
	lines []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.n {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:t.n-1]
	}
	t.lines = append(t.lines, line)
}

func (t *tail) last(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > len(t.lines) {
		n = len(t.lines)
	}
	return append([]string(nil), t.lines[len(t.lines)-n:]...)
}
