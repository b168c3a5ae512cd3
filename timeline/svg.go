package timeline

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Layout (pixels).
const (
	width      = 1200
	plotLeft   = 200 // lane labels to the left
	plotRight  = 1160
	knockLaneH = 36
	hostLaneH  = 96
	portLaneH  = 80
	axisH      = 56
	legendH    = 64
	footerH    = 28
)

// Colours (ColorBrewer RdYlBu/Greens, readable on white and in grey).
const (
	colREJ       = "#c0392b"
	colS0        = "#e67e22"
	colChange    = "#1f5fa8"
	colHandshake = "#1a7f3c"
	colClosed    = "#7f1d1d"
	colOpen      = "#0f766e"
	colText      = "#1b1b1b"
	colMuted     = "#555555"
	colGrid      = "#d9d9d9"
	fillKnock    = "#dbe9f6"
	fillChange   = "#fde4c8"
	fillHS       = "#dcf0d5"
	colHigh      = "#b2182b"
	colMedium    = "#c05a00"
	colSuppr     = "#6b6b6b"
)

// span is the picture's time range and its mapping to x.
type span struct {
	lo, hi time.Time
}

func (s span) x(t time.Time) float64 {
	d := s.hi.Sub(s.lo).Seconds()
	if d <= 0 {
		return plotLeft
	}
	f := t.Sub(s.lo).Seconds() / d
	return plotLeft + f*float64(plotRight-plotLeft)
}

// clampX maps t into the plot, reporting whether it had to be clamped.
func (s span) clampX(t time.Time) (float64, bool) {
	switch {
	case t.Before(s.lo):
		return plotLeft, true
	case t.After(s.hi):
		return plotRight, true
	}
	return s.x(t), false
}

// timeSpan chooses the visible range: the knock, the change and the
// handshake with some room; the port's last closed/open times are shown
// in range only if that does not squeeze the rest (else at the edge).
func timeSpan(a *Alert) span {
	var ts []time.Time
	for _, t := range a.Touches {
		ts = append(ts, t.Time)
	}
	if a.Change != nil && !a.Change.Time.IsZero() {
		ts = append(ts, a.Change.Time)
	}
	for _, t := range []time.Time{a.SYN, a.ACK} {
		if !t.IsZero() {
			ts = append(ts, t)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	lo, hi := ts[0], ts[len(ts)-1]
	core := hi.Sub(lo)
	if core < 2*time.Second {
		core = 2 * time.Second
	}
	for _, t := range []time.Time{a.PortLastClosed, a.PortLastOpen} {
		if t.IsZero() {
			continue
		}
		if t.Before(lo) && lo.Sub(t) <= core {
			lo = t
		}
		if t.After(hi) && t.Sub(hi) <= core {
			hi = t
		}
	}
	// The knock window's start, when close, shows how tight the knock was.
	if kw := a.LastTouch().Add(-a.Windows.KnockWindow); kw.Before(lo) && lo.Sub(kw) <= core/2 {
		lo = kw
	}
	pad := hi.Sub(lo) / 14
	if pad < 500*time.Millisecond {
		pad = 500 * time.Millisecond
	}
	return span{lo: lo.Add(-pad), hi: hi.Add(pad)}
}

// svgWriter accumulates the document.
type svgWriter struct {
	b bytes.Buffer
}

func (w *svgWriter) f(format string, args ...any) { fmt.Fprintf(&w.b, format, args...) }

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// text writes one text element; anchor is start, middle or end.
func (w *svgWriter) text(x, y float64, size int, anchor, color, weight, s string) {
	w.f(`<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" fill="%s" font-weight="%s">%s</text>`+"\n",
		x, y, size, anchor, color, weight, esc(s))
}

func clock(t time.Time) string { return t.UTC().Format("15:04:05.000") }

func dur(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d < time.Second:
		s = fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		s = strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.1f", d.Seconds()), "0"), ".") + " s"
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d.Minutes()))
		if sec := int(d.Seconds()) % 60; sec != 0 {
			s += fmt.Sprintf(" %d s", sec)
		}
	default:
		s = fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	if neg {
		return "-" + s
	}
	return s
}

// wrap splits s into lines of at most n characters at spaces.
func wrap(s string, n int) []string {
	var lines []string
	var cur strings.Builder
	for _, word := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(word) > n {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(word)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// SVG writes the alert as a self-contained SVG document.
func SVG(out io.Writer, a Alert) error {
	if len(a.Touches) == 0 || a.ACK.IsZero() {
		return fmt.Errorf("draw alert %s: no knock or no handshake", a.ID)
	}
	s := timeSpan(&a)
	ports := a.Ports()
	verdict := wrap(Verdict(a), 140)
	top := 98 + 18*len(verdict) + 30
	// The knock block starts with a strip for the knock window's label.
	knockBlock := float64(top)
	knockTop := knockBlock + 18
	hostTop := knockTop + float64(knockLaneH*len(ports)) + 8
	// The change's description goes on the side of its marker with more
	// room, wrapped to fit (full values are also in the marker's tooltip).
	type textLine struct {
		s    string
		bold bool
	}
	var cLines []textLine
	var cx, cRoom float64
	cAnchor := "start"
	if c := a.Change; c != nil {
		cx, _ = s.clampX(c.Time)
		cRoom = float64(plotRight) - (cx + 16)
		if left := cx - 16 - (plotLeft + 4); left > cRoom {
			cAnchor, cRoom = "end", left
		}
		for i, l := range changeLines(c) {
			size := 13
			if i == 0 {
				size = 14
			}
			perLine := max(12, int(cRoom/textWidth("x", size, i == 0)))
			for _, part := range wrapHard(l, perLine) {
				cLines = append(cLines, textLine{part, i == 0})
			}
		}
	}
	hostH := max(hostLaneH, 34+18*len(cLines))
	portTop := hostTop + float64(hostH)
	axisY := portTop + portLaneH
	height := int(axisY) + axisH + legendH + footerH

	w := &svgWriter{}
	w.f(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n",
		width, height, width, height)
	w.f(`<title>%s</title>`+"\n", esc(fmt.Sprintf("knockwatch alert %s: %s -> %s:%d", a.ID, a.Source.IP, a.Dest.IP, a.Dest.Port)))
	w.f(`<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)

	// Header: verdict, who and where.
	badge, bcol := strings.ToUpper(a.Confidence), colHigh
	if a.Confidence != "high" {
		bcol = colMedium
	}
	if a.Suppressed {
		badge, bcol = "SUPPRESSED ("+strings.ToUpper(a.Confidence)+")", colSuppr
	}
	bw := textWidth(badge, 18, true) + 24
	w.f(`<rect x="20" y="16" width="%.1f" height="32" rx="6" fill="%s"/>`+"\n", bw, bcol)
	w.text(32, 39, 18, "start", "#ffffff", "bold", badge)
	w.text(20+bw+14, 39, 20, "start", colText, "bold", fit(headline(a), float64(width-40)-bw-14, 20, true))
	host := a.Dest.IP
	if a.HostName != "" {
		host = a.HostName + " (" + a.Dest.IP + ")"
	}
	sub := fmt.Sprintf("%s → %s port %d/tcp · alert %s %s", a.Source.IP, host, a.Dest.Port, shortID(a.ID), a.Action)
	if a.Observer != "" {
		sub += " · sensor " + a.Observer
	}
	w.text(20, 72, 15, "start", colMuted, "normal", sub)
	for i, l := range verdict {
		w.text(20, float64(98+18*i), 14, "start", colText, "normal", l)
	}

	// Lanes: labels, separators.
	laneLabel := func(y float64, h int, label, sub string) {
		w.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", 20, y, plotRight, y, colGrid)
		w.text(plotLeft-14, y+float64(h)/2+5, 14, "end", colText, "bold", label)
		if sub != "" {
			w.text(plotLeft-14, y+float64(h)/2+21, 11, "end", colMuted, "normal", sub)
		}
	}
	w.text(20, knockBlock-6, 12, "start", colMuted, "bold", "KNOCK (closed-port touches by "+a.Source.IP+")")
	for i, p := range ports {
		laneLabel(knockTop+float64(i*knockLaneH), knockLaneH, fmt.Sprintf("port %d", p), "")
	}
	hostLabel := "host event"
	if a.Change == nil {
		hostLabel = "host event: none"
	}
	laneLabel(hostTop, hostH, hostLabel, a.HostName)
	laneLabel(portTop, portLaneH, fmt.Sprintf("port %d", a.Dest.Port), "the opened port")
	w.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", 20, axisY, plotRight, axisY, colGrid)

	// The rule's windows, shaded behind the evidence.
	last := a.LastTouch()
	win := a.Windows
	shade := func(from, to time.Time, y0, y1 float64, fill, label string) {
		x0, c0 := s.clampX(from)
		x1, c1 := s.clampX(to)
		if x1-x0 < 1 {
			return
		}
		w.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.9"/>`+"\n", x0, y0, x1-x0, y1-y0, fill)
		if c0 {
			w.text(x0+4, y1-6, 11, "start", colMuted, "normal", "◀ from "+clock(from))
		}
		if c1 {
			w.text(x1-4, y1-6, 11, "end", colMuted, "normal", "until "+clock(to)+" ▶")
		}
		w.text(x0+4, y0+13, 11, "start", colMuted, "normal", label)
	}
	shade(last.Add(-win.KnockWindow), last, knockBlock, hostTop-8, fillKnock,
		fmt.Sprintf("knock window: ≥%d closed ports within %s", win.MinPorts, dur(win.KnockWindow)))
	shade(last.Add(-win.Skew), last.Add(win.ChangeAfter), hostTop, portTop, fillChange,
		fmt.Sprintf("change window: %s before to %s after the last touch", dur(win.Skew), dur(win.ChangeAfter)))
	if a.Change != nil {
		shade(a.Change.Time.Add(-win.Skew), a.Change.Time.Add(win.HandshakeAfter), portTop, axisY, fillHS,
			fmt.Sprintf("handshake window: up to %s after the change", dur(win.HandshakeAfter)))
	} else {
		shade(last, last.Add(win.ChangeAfter+win.HandshakeAfter), portTop, axisY, fillHS,
			fmt.Sprintf("handshake window: up to %s after the last touch", dur(win.ChangeAfter+win.HandshakeAfter)))
	}

	// Axis with ticks at a round step.
	drawAxis(w, s, axisY, knockBlock)

	// Knock touches, one lane per port.
	lastLabel := map[uint16]float64{}
	for _, t := range a.Touches {
		i := indexOf(ports, t.Port)
		cy := knockTop + float64(i*knockLaneH) + knockLaneH/2
		x, clamped := s.clampX(t.Time)
		w.f(`<g><title>%s</title>`, esc(fmt.Sprintf("port %d %s at %s", t.Port, t.Kind, clock(t.Time))))
		if t.Kind == "S0" {
			w.f(`<circle cx="%.1f" cy="%.1f" r="7" fill="#ffffff" stroke="%s" stroke-width="3"/>`, x, cy, colS0)
		} else {
			w.f(`<circle cx="%.1f" cy="%.1f" r="7" fill="%s"/>`, x, cy, colREJ)
		}
		w.f("</g>\n")
		if prev, ok := lastLabel[t.Port]; !ok || x-prev > 120 || clamped {
			col := colREJ
			if t.Kind == "S0" {
				col = colS0
			}
			w.text(x+12, cy+5, 12, "start", col, "bold", t.Kind+" "+clock(t.Time))
			lastLabel[t.Port] = x
		}
	}

	// The exposure change.
	hy := hostTop + 22
	if c := a.Change; c != nil {
		x, _ := s.clampX(c.Time)
		w.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="5,4"/>`+"\n",
			x, knockTop, x, axisY, colChange)
		w.f(`<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s"><title>%s</title></polygon>`+"\n",
			x, hy-10, x+10, hy, x, hy+10, x-10, hy, colChange, esc(changeTitle(c)))
		tx := cx + 16
		if cAnchor == "end" {
			tx = cx - 16
		}
		for i, l := range cLines {
			weight, size, col := "normal", 13, colText
			if l.bold {
				weight, size, col = "bold", 14, colChange
			}
			w.text(tx, hy+5+float64(i*18), size, cAnchor, col, weight, l.s)
		}
	} else {
		w.text(plotLeft+12, hy+24, 14, "start", colMuted, "normal",
			"No host event explains the opening: the network shows the port went from closed to open.")
	}

	// The opened port: last seen closed / open, and the handshake.
	py := portTop + 26
	if !a.PortLastClosed.IsZero() {
		x, clamped := s.clampX(a.PortLastClosed)
		label := "seen closed " + clock(a.PortLastClosed)
		if clamped {
			label = "seen closed " + clock(a.PortLastClosed) + " (" + dur(a.ACK.Sub(a.PortLastClosed)) + " before the handshake)"
		}
		w.f(`<g stroke="%s" stroke-width="3"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/><title>%s</title></g>`+"\n",
			colClosed, x-7, py-7, x+7, py+7, x-7, py+7, x+7, py-7, esc(label))
		anchor, tx, room := "start", x+12, float64(plotRight)-(x+12)
		if left := x - 12 - (plotLeft + 4); left > room {
			anchor, tx, room = "end", x-12, left
		}
		w.text(tx, py+32, 12, anchor, colClosed, "bold", fit(label, room, 12, true))
	}
	openLabel := "never seen open before"
	if !a.PortLastOpen.IsZero() {
		x, _ := s.clampX(a.PortLastOpen)
		openLabel = "last seen open before: " + clock(a.PortLastOpen)
		w.f(`<rect x="%.1f" y="%.1f" width="12" height="12" fill="#ffffff" stroke="%s" stroke-width="3"><title>%s</title></rect>`+"\n",
			x-6, py+18, colOpen, esc(openLabel))
	}
	ax, _ := s.clampX(a.ACK)
	w.f(`<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s"><title>%s</title></polygon>`+"\n",
		ax-9, py+2, ax+9, py+2, ax, py-14, colHandshake,
		esc(fmt.Sprintf("first handshake: SYN %s, SYN-ACK %s, ACK %s", clock(a.SYN), clock(a.SYNACK), clock(a.ACK))))
	hsLines := []string{
		fmt.Sprintf("first handshake from %s:%d", a.Source.IP, a.Source.Port),
		fmt.Sprintf("SYN %s · ACK +%s · %s", clock(a.SYN), dur(a.ACK.Sub(a.SYN)), openLabel),
	}
	anchor, tx, room := "start", ax+14, float64(plotRight)-(ax+14)
	if left := ax - 14 - (plotLeft + 4); left > room {
		anchor, tx, room = "end", ax-14, left
	}
	w.text(tx, py-2, 13, anchor, colHandshake, "bold", fit(hsLines[0], room, 13, true))
	w.text(tx, py+16, 12, anchor, colText, "normal", fit(hsLines[1], room, 12, false))

	// Legend and footer.
	drawLegend(w, axisY+axisH)
	foot := fmt.Sprintf("rule AN0842 (T1205.001) · knock ≥%d ports in %s · change %s before to %s after · first handshake ≤%s after · times UTC, %s",
		win.MinPorts, dur(win.KnockWindow), dur(win.Skew), dur(win.ChangeAfter), dur(win.HandshakeAfter), a.ACK.UTC().Format("2006-01-02"))
	w.text(20, float64(height-10), 11, "start", colMuted, "normal", foot)
	w.f("</svg>\n")
	_, err := out.Write(w.b.Bytes())
	return err
}

func indexOf(ps []uint16, p uint16) int {
	for i, q := range ps {
		if q == p {
			return i
		}
	}
	return 0
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

// niceStep picks a tick step giving about 6-10 ticks over d.
func niceStep(d time.Duration) time.Duration {
	steps := []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour}
	for _, st := range steps {
		if d/st <= 10 {
			return st
		}
	}
	return time.Duration(math.Ceil(float64(d)/float64(10*time.Hour))) * 10 * time.Hour
}

func drawAxis(w *svgWriter, s span, axisY, top float64) {
	step := niceStep(s.hi.Sub(s.lo))
	first := s.lo.Truncate(step)
	if first.Before(s.lo) {
		first = first.Add(step)
	}
	format := "15:04:05"
	if step < time.Second {
		format = "15:04:05.000"
	}
	w.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1.5"/>`+"\n", plotLeft, axisY, plotRight, axisY, colText)
	for t := first; !t.After(s.hi); t = t.Add(step) {
		x := s.x(t)
		w.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="2,4"/>`+"\n", x, top, x, axisY, colGrid)
		w.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>`+"\n", x, axisY, x, axisY+6, colText)
		w.text(x, axisY+22, 12, "middle", colText, "normal", t.UTC().Format(format))
	}
	w.text(plotRight, axisY+42, 12, "end", colMuted, "normal", "time (UTC), grid every "+dur(step))
}

func drawLegend(w *svgWriter, y float64) {
	x := 20.0
	item := func(draw func(x, y float64), label string) {
		draw(x+8, y+14)
		w.text(x+22, y+19, 12, "start", colText, "normal", label)
		x += 22 + 7.2*float64(len([]rune(label))) + 26
	}
	item(func(x, y float64) { w.f(`<circle cx="%.1f" cy="%.1f" r="7" fill="%s"/>`+"\n", x, y, colREJ) }, "REJ: SYN answered by RST")
	item(func(x, y float64) {
		w.f(`<circle cx="%.1f" cy="%.1f" r="7" fill="#ffffff" stroke="%s" stroke-width="3"/>`+"\n", x, y, colS0)
	}, "S0: SYN never answered")
	item(func(x, y float64) {
		w.f(`<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s"/>`+"\n", x, y-9, x+9, y, x, y+9, x-9, y, colChange)
	}, "exposure change")
	item(func(x, y float64) {
		w.f(`<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s"/>`+"\n", x-8, y+7, x+8, y+7, x, y-8, colHandshake)
	}, "first handshake")
	item(func(x, y float64) {
		w.f(`<g stroke="%s" stroke-width="3"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/></g>`+"\n",
			colClosed, x-6, y-6, x+6, y+6, x-6, y+6, x+6, y-6)
	}, "port seen closed")
	item(func(x, y float64) {
		w.f(`<rect x="%.1f" y="%.1f" width="12" height="12" fill="#ffffff" stroke="%s" stroke-width="3"/>`+"\n", x-6, y-6, colOpen)
	}, "port seen open")
	y2 := y + 30
	x = 20
	for _, sw := range []struct{ fill, label string }{{fillKnock, "knock window"}, {fillChange, "change window"}, {fillHS, "handshake window"}} {
		w.f(`<rect x="%.1f" y="%.1f" width="28" height="14" fill="%s"/>`+"\n", x, y2+4, sw.fill)
		w.text(x+36, y2+16, 12, "start", colText, "normal", sw.label)
		x += 36 + 7.2*float64(len(sw.label)) + 30
	}
}

// headline says in a few words what happened.
func headline(a Alert) string {
	if a.Change == nil {
		return fmt.Sprintf("knock on %d closed ports, then first connection to %d (no host event)", len(a.Ports()), a.Dest.Port)
	}
	return fmt.Sprintf("knock on %d closed ports, the host opened %d, the knocker connected first", len(a.Ports()), a.Dest.Port)
}

func changeTitle(c *Change) string {
	return fmt.Sprintf("%s at %s: event %d record %d on %s", c.Kind, clock(c.Time), c.EventID, c.RecordID, c.Host)
}

// changeLines describes the change: what, which rule, who with what, the
// program it applies to, and the record.
func changeLines(c *Change) []string {
	lines := []string{changeWhat(c)}
	if c.RuleName != "" || c.RuleID != "" {
		r := "rule"
		if c.RuleName != "" {
			r += fmt.Sprintf(" %q", c.RuleName)
		}
		if c.RuleID != "" {
			r += " " + c.RuleID
		}
		lines = append(lines, r)
	}
	if c.ModifyingUser != "" {
		lines = append(lines, "by "+c.ModifyingUser)
	}
	if c.ModifyingApplication != "" {
		lines = append(lines, "using "+c.ModifyingApplication)
	}
	if c.Application != "" {
		lines = append(lines, "for program "+c.Application)
	}
	if c.Service != "" {
		lines = append(lines, "for service "+c.Service)
	}
	lines = append(lines, fmt.Sprintf("event %d record %d · %s · %s", c.EventID, c.RecordID, c.Host, clock(c.Time)))
	return lines
}

// wrapHard wraps s at spaces to lines of at most n characters, cutting
// words longer than a line (paths, SIDs).
func wrapHard(s string, n int) []string {
	var out []string
	for _, l := range wrap(s, n) {
		for len([]rune(l)) > n {
			r := []rune(l)
			out = append(out, string(r[:n]))
			l = string(r[n:])
		}
		out = append(out, l)
	}
	return out
}

// textWidth estimates the rendered width of s (DejaVu Sans averages about
// 0.6 em per character, bold a little more).
func textWidth(s string, size int, bold bool) float64 {
	em := 0.6
	if bold {
		em = 0.66
	}
	return em * float64(size) * float64(len([]rune(s)))
}

// fit cuts s to what fits in room pixels.
func fit(s string, room float64, size int, bold bool) string {
	if textWidth(s, size, bold) <= room {
		return s
	}
	n := int(room / textWidth("x", size, bold))
	if n < 4 {
		n = 4
	}
	return clip(s, n)
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func changeWhat(c *Change) string {
	ports := c.Ports
	if ports == "" {
		ports = "no port named"
	}
	proto := c.Protocol
	if proto == "" {
		proto = "?"
	}
	rule := ""
	if c.RuleName != "" {
		rule = fmt.Sprintf(" %q", clip(c.RuleName, 60))
	}
	switch c.Kind {
	case "rule_added", "rule_enabled", "rule_modified":
		verb := map[string]string{"rule_added": "firewall rule added", "rule_enabled": "firewall rule enabled",
			"rule_modified": "firewall rule modified"}[c.Kind]
		return fmt.Sprintf("%s: %s %s %s/%s", verb, orWord(c.Action, "?"), orWord(c.Direction, "?"), ports, proto)
	case "listener":
		return fmt.Sprintf("listener started on %s/%s", ports, proto)
	case "firewall_disabled":
		return "firewall switched off: every port open"
	case "service_started":
		return "service started" + rule
	}
	return c.Kind + rule + " " + ports
}

func orWord(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Verdict says in words what the alert means and how sure it is.
func Verdict(a Alert) string {
	var b strings.Builder
	host := a.Dest.IP
	if a.HostName != "" {
		host = a.HostName
	}
	var kinds []string
	for _, t := range a.Touches {
		kinds = append(kinds, fmt.Sprintf("%d %s", t.Port, t.Kind))
	}
	first, last := a.Touches[0].Time, a.LastTouch()
	for _, t := range a.Touches {
		if t.Time.Before(first) {
			first = t.Time
		}
	}
	switch {
	case a.Suppressed:
		fmt.Fprintf(&b, "Suppressed (%s): the analyst's tuning covers this match; it is shown for the record. ", orWord(a.Reason, "suppression"))
	case a.Action == "upgraded":
		fmt.Fprintf(&b, "Upgraded to %s confidence by evidence that arrived after the first record. ", a.Confidence)
	}
	switch {
	case a.Confidence == "high":
		b.WriteString("High confidence: all three parts of AN0842 hold and the host event names the port. ")
	case a.Change != nil:
		b.WriteString("Medium confidence: the host event names the rule but not the port. ")
	default:
		b.WriteString("Medium confidence: no host event explains it, but the network shows the port went from closed to open. ")
	}
	fmt.Fprintf(&b, "%s touched %d closed ports on %s within %s (%s). ", a.Source.IP, len(a.Ports()), host,
		dur(last.Sub(first)), strings.Join(kinds, ", "))
	if c := a.Change; c != nil {
		fmt.Fprintf(&b, "%s after the last touch the host reported: %s", dur(c.Time.Sub(last)), changeWhat(c))
		if c.RuleName != "" {
			fmt.Fprintf(&b, " (rule %q)", c.RuleName)
		}
		if c.ModifyingUser != "" || c.ModifyingApplication != "" {
			fmt.Fprintf(&b, ", changed by %s", strings.TrimSpace(orWord(c.ModifyingUser, "")+" "+baseName(c.ModifyingApplication)))
		}
		fmt.Fprintf(&b, ". %s after the change %s completed the first handshake to port %d", dur(a.ACK.Sub(c.Time)), a.Source.IP, a.Dest.Port)
	} else {
		fmt.Fprintf(&b, "%s after the last touch %s completed the first handshake to port %d", dur(a.ACK.Sub(last)), a.Source.IP, a.Dest.Port)
	}
	if !a.PortLastClosed.IsZero() {
		fmt.Fprintf(&b, ", which the sensor saw closed %s before", dur(a.ACK.Sub(a.PortLastClosed)))
		if a.PortLastOpen.IsZero() {
			b.WriteString(" and never open since")
		}
	}
	b.WriteString(".")
	return b.String()
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `\/`); i >= 0 {
		return p[i+1:]
	}
	return p
}
