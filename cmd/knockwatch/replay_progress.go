package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/knockwatch/knockwatch/replay"
)

// Progress of `knockwatch replay` on a terminal: a replay of a day of a
// busy tap runs for minutes, so after progressDelay it shows, updated
// every progressEvery, the bytes read of the total, the packet rate, the
// time taken and an estimate of the rest, and the alerts so far; the line
// is erased before the summary. When stderr is not a terminal nothing is
// written (logs and CI output stay clean).
var (
	progressDelay = time.Second
	progressEvery = 250 * time.Millisecond
	// stderrIsTerminal decides whether progress is drawn (tests replace
	// it; isTerminal asks the kernel: TCGETS).
	stderrIsTerminal = isTerminal
)

type replayProgress struct {
	w      io.Writer
	alerts func() uint64
	start  time.Time

	mu      sync.Mutex
	last    time.Time
	shown   bool
	lastLen int
}

// newReplayProgress returns nil unless stderr is a terminal.
func newReplayProgress(stderr io.Writer, alerts func() uint64) *replayProgress {
	if !stderrIsTerminal(stderr) {
		return nil
	}
	return &replayProgress{w: stderr, alerts: alerts, start: time.Now()}
}

func (p *replayProgress) update(pr replay.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	elapsed := now.Sub(p.start)
	final := pr.BytesRead >= pr.BytesTotal
	if elapsed < progressDelay || (!final && now.Sub(p.last) < progressEvery) {
		return
	}
	p.last = now
	line := progressLine(pr, elapsed, p.alerts())
	pad := ""
	if n := p.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
	p.lastLen, p.shown = len(line), true
}

// done erases the progress line (if one was drawn).
func (p *replayProgress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// progressLine renders one state: "[####      ] 1.2 GiB of 4.8 GiB (25.0%)
// 1.93M packets/s  elapsed 1m52s  left ~5m36s  alerts 3".
func progressLine(pr replay.Progress, elapsed time.Duration, alerts uint64) string {
	frac := 0.0
	if pr.BytesTotal > 0 {
		frac = min(1, float64(pr.BytesRead)/float64(pr.BytesTotal))
	}
	const width = 20
	n := int(frac * width)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(pr.Packets) / s
	}
	left := "?"
	if frac > 0 && frac < 1 {
		left = "~" + roundDur(time.Duration(float64(elapsed)*(1-frac)/frac)).String()
	} else if frac >= 1 {
		left = "0s"
	}
	return fmt.Sprintf("[%s%s] %s of %s (%.1f%%)  %s packets/s  elapsed %s  left %s  alerts %d",
		strings.Repeat("#", n), strings.Repeat(" ", width-n), byteSize(pr.BytesRead), byteSize(pr.BytesTotal), 100*frac,
		count(rate), roundDur(elapsed), left, alerts)
}

func roundDur(d time.Duration) time.Duration {
	if d >= time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

func byteSize(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// replayProgressState builds a replay.Progress (tests).
func replayProgressState(read, total, packets int64) replay.Progress {
	return replay.Progress{BytesRead: read, BytesTotal: total, Packets: packets}
}
