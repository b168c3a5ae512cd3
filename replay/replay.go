package replay

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
)

// Sink receives what the engine and the event files produce: the
// pipeline in `knockwatch replay` (records and changes go to the
// correlation engine), anything else in tests.
type Sink interface {
	AddRecord(ctx context.Context, r sensor.Record) error
	AddChange(c *winevents.ExposureChange) error
}

// Options are the inputs of one replay.
type Options struct {
	Captures []string
	Events   []string
	Engine   Engine
	// Decoder decodes the event files (its Stats count what was read).
	Decoder *winevents.Decoder
	Sink    Sink
	// SweepInterval is the capture time between sweeps (default 1 s);
	// FinalSweep is how long after the last packet the closing sweep runs
	// (default: the engine's S0 timeout and one more second).
	SweepInterval time.Duration
	FinalSweep    time.Duration
	// GapSweeps are offsets after the last packet at which sweeps run
	// during a silence in the capture (those that fall inside it), before
	// the sweep at the next packet: what the silence decided is decided at
	// its own time, and no state outlives the sensor's 32-bit clocks
	// (microseconds, read back within 35 minutes). Default:
	// GapSweepsFor(sensor.DefaultConfig()).
	GapSweeps []time.Duration
	// Progress, when set, is called about every 16k packets and once at
	// the end with how far the replay is.
	Progress func(Progress)
	// OnTouch, when set, receives every closed-port touch the engine
	// classified (the engine must be made with ReportTouches), in the
	// order the engine decided them. Touches never go to Sink.
	OnTouch func(*sensor.TouchRecord) error
	// OnSweep, when set, is called after every sweep with its capture
	// time and what each capture carried so far (Paths: one per capture,
	// in Captures order), and once more after the closing sweep: coverage
	// ticks there and asks the engine for clock samples.
	OnSweep func(now time.Time, paths []Path) error
}

// Path is what one capture carried so far: its TCP packets and among them
// SYNs, SYN-ACKs and RSTs, under the program's counter names ("tcp",
// "syn", "synack", "rst"), as a capture interface's per-interface counters.
type Path struct {
	Name     string
	Counters sensor.Counters
}

// Progress is how far a replay is: bytes read of all captures (compressed
// bytes for gzip captures) of their total size, and packets handed to the
// engine.
type Progress struct {
	BytesRead, BytesTotal int64
	Packets               int64
}

// Summary is what a replay read and found.
type Summary struct {
	Engine   string
	Captures int
	// Packets handed to the engine; Short frames shorter than Ethernet and
	// Unusable frames with no Ethernet form (skipped, counted).
	Packets, Short, Unusable int64
	// Records the engine produced.
	Knocks, Handshakes, TouchRecords int64
	Counters                         sensor.Counters
	// Events: what the event files held (winevents.Result summed).
	Events       winevents.Result
	EventFiles   int
	First, Last  time.Time // capture time span
	CutShort     []string  // captures that ended in the middle of a packet
	RecordErrors int64     // records the sink refused (counted by the pipeline too)
	ChangeErrors int64     // changes the sink refused
	Duration     time.Duration
}

// Touches is the closed-port touches the engine counted.
func (s *Summary) Touches() uint64 {
	return s.Counters["touch_rej"] + s.Counters["touch_s0"] + s.Counters["touch_rstos0"]
}

// GapSweepsFor returns the sweeps a silence in a capture needs with cfg: when
// unanswered SYNs become S0 touches, when a window of touches is over, and
// when everything the sensor keeps is decided (its longest time, the flag
// TTL, is at most 30 minutes).
func GapSweepsFor(cfg sensor.Config) []time.Duration {
	return []time.Duration{cfg.S0Timeout + time.Second, cfg.Window + time.Second, 31 * time.Minute}
}

// Run replays opts' event files, then its captures, into opts.Sink. The
// event files go first: the correlation engine works in event time, so
// evidence order does not change the outcome, and a host event known
// before the handshake yields the final alert at once instead of a medium
// alert and its upgrade. An unreadable input ends the replay with an error
// naming it.
func Run(ctx context.Context, opts Options) (Summary, error) {
	start := time.Now()
	sum := Summary{Engine: opts.Engine.Name(), Captures: len(opts.Captures), EventFiles: len(opts.Events)}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Second
	}
	if opts.GapSweeps == nil {
		opts.GapSweeps = GapSweepsFor(sensor.DefaultConfig())
	}
	opts.GapSweeps = slices.Sorted(slices.Values(opts.GapSweeps))
	for _, path := range opts.Events {
		if err := readEvents(opts, path, &sum); err != nil {
			return sum, err
		}
	}
	caps := make([]*Capture, 0, len(opts.Captures))
	defer func() {
		for _, c := range caps {
			c.Close()
		}
	}()
	var total int64
	for _, path := range opts.Captures {
		c, err := OpenCapture(path)
		if err != nil {
			return sum, err
		}
		caps = append(caps, c)
		total += c.Size()
	}
	m, err := newMerger(caps)
	if err != nil {
		return sum, err
	}
	emit := func(r sensor.Record) error {
		switch t := r.(type) {
		case *sensor.Knock:
			sum.Knocks++
		case *sensor.Handshake:
			sum.Handshakes++
		case *sensor.TouchRecord:
			sum.TouchRecords++
			if opts.OnTouch != nil {
				return opts.OnTouch(t)
			}
			return nil
		}
		if err := opts.Sink.AddRecord(ctx, r); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sum.RecordErrors++
		}
		return nil
	}
	var nextSweep int64
	step := int64(opts.SweepInterval)
	var n int64
	var paths []Path
	if opts.OnSweep != nil {
		for _, c := range caps {
			paths = append(paths, Path{Name: c.Path, Counters: sensor.Counters{"tcp": 0, "syn": 0, "synack": 0, "rst": 0}})
		}
	}
	sweep := func(at time.Time) error {
		if err := opts.Engine.Sweep(at); err != nil {
			return err
		}
		if opts.OnSweep != nil {
			if err := opts.Engine.Drain(emit); err != nil {
				return err
			}
			return opts.OnSweep(at, paths)
		}
		return nil
	}
	each := func(frame []byte, ts time.Time, capIdx int) error {
		ns := ts.UnixNano()
		if sum.First.IsZero() {
			sum.First = ts
			nextSweep = ns - ns%step + step
		}
		if ns >= nextSweep {
			// A gap in the capture takes a few sweeps at the times that
			// decide something (GapSweeps after the last packet), not one
			// per second of silence; then the one at the boundary just
			// passed.
			if last := sum.Last.UnixNano(); ns-last > 2*step {
				for _, d := range opts.GapSweeps {
					if at := last + int64(d); at < ns-ns%step {
						if err := sweep(time.Unix(0, at).UTC()); err != nil {
							return err
						}
					}
				}
			}
			at := ns - ns%step
			if err := sweep(time.Unix(0, at).UTC()); err != nil {
				return err
			}
			nextSweep = at + step
		}
		if ts.After(sum.Last) {
			sum.Last = ts
		}
		if len(frame) < 14 {
			sum.Short++
			return nil
		}
		sum.Packets++
		if paths != nil {
			countPath(paths[capIdx].Counters, frame)
		}
		if err := opts.Engine.Run(frame, ts); err != nil {
			return err
		}
		return opts.Engine.Drain(emit)
	}
	for {
		more, err := m.next(each)
		if err != nil {
			return sum, err
		}
		if !more {
			break
		}
		if n++; n&0x3fff == 0 {
			if err := ctx.Err(); err != nil {
				return sum, err
			}
			if opts.Progress != nil {
				var done int64
				for _, c := range caps {
					done += c.BytesRead()
				}
				opts.Progress(Progress{BytesRead: done, BytesTotal: total, Packets: sum.Packets})
			}
		}
	}
	sum.Unusable = m.Unusable
	for _, c := range caps {
		if c.CutShort {
			sum.CutShort = append(sum.CutShort, c.Path)
		}
	}
	if !sum.Last.IsZero() {
		final := opts.FinalSweep
		if final <= 0 {
			final = finalSweepAfter
		}
		if err := sweep(sum.Last.Add(final)); err != nil {
			return sum, err
		}
		if err := opts.Engine.Drain(emit); err != nil {
			return sum, err
		}
	}
	if opts.Progress != nil {
		opts.Progress(Progress{BytesRead: total, BytesTotal: total, Packets: sum.Packets})
	}
	c, err := opts.Engine.Counters()
	if err != nil {
		return sum, err
	}
	sum.Counters = c
	sum.Duration = time.Since(start)
	return sum, nil
}

// finalSweepAfter is the default closing sweep's distance from the last
// packet: past the default S0 timeout (2 s).
const finalSweepAfter = 3 * time.Second

func readEvents(opts Options, path string, sum *Summary) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open events: %w", err)
	}
	defer f.Close()
	r, closeFn, err := maybeGzip(f)
	if err != nil {
		return fmt.Errorf("read events %s: %w", path, err)
	}
	defer closeFn()
	res, err := opts.Decoder.DecodeReader(r, func(c winevents.ExposureChange) {
		if opts.Sink.AddChange(&c) != nil {
			sum.ChangeErrors++
		}
	})
	addResult(&sum.Events, res)
	if err != nil {
		return fmt.Errorf("read events %s: %w", path, err)
	}
	if res.Read == 0 {
		return fmt.Errorf("read events %s: no Windows event records found (want Event XML, Winlogbeat or NXLog JSON)", path)
	}
	if res.Relevant == 0 && res.Skipped == 0 && res.Duplicates == 0 && res.Rejected == res.Read {
		return fmt.Errorf("read events %s: none of its %d records could be decoded (%v)", path, res.Read, res.Reasons)
	}
	return nil
}

func addResult(dst *winevents.Result, r winevents.Result) {
	dst.Read += r.Read
	dst.Relevant += r.Relevant
	dst.Skipped += r.Skipped
	dst.Duplicates += r.Duplicates
	dst.Rejected += r.Rejected
	dst.Emitted += r.Emitted
	for k, v := range r.Reasons {
		if dst.Reasons == nil {
			dst.Reasons = map[winevents.Reason]int{}
		}
		dst.Reasons[k] += v
	}
}

// maybeGzip returns a reader of f's content, decompressed if it is gzip.
func maybeGzip(f *os.File) (io.Reader, func(), error) {
	var magic [2]byte
	n, _ := io.ReadFull(f, magic[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, err
	}
	if n == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := newGzip(f)
		if err != nil {
			return nil, nil, err
		}
		return gz, func() { gz.Close() }, nil
	}
	return f, func() {}, nil
}
