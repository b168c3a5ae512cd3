package replay

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// MaxFrame is the longest frame handed to an engine; longer frames are cut
// (BPF_PROG_RUN takes a frame of at most a page minus head- and tailroom).
const MaxFrame = 3072

// ErrUnsupported marks a capture that is not pcap/pcapng or has a link
// type replay cannot read.
var ErrUnsupported = errors.New("unsupported capture")

// packetSource is pcapFile or pcapgo's NgReader.
type packetSource interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// Capture reads one capture file as Ethernet frames.
type Capture struct {
	Path string
	// CutShort is set when the file ended in the middle of a packet.
	CutShort bool

	f     *os.File
	cnt   *countingReader
	gz    *gzip.Reader
	src   packetSource
	ng    bool
	link  layers.LinkType
	buf   []byte // synthesized frames
	last  time.Time
	count int64
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// OpenCapture opens a pcap or pcapng file, plain or gzip-compressed, and
// checks its link type.
func OpenCapture(path string) (*Capture, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	c := &Capture{Path: path, f: f, cnt: &countingReader{r: f}, buf: make([]byte, 0, MaxFrame)}
	if err := c.init(); err != nil {
		f.Close()
		return nil, fmt.Errorf("open capture %s: %w", path, err)
	}
	return c, nil
}

func (c *Capture) init() error {
	br := bufio.NewReaderSize(c.cnt, 256<<10)
	var r io.Reader = br
	magic, err := br.Peek(4)
	if err != nil {
		return fmt.Errorf("%w: file too short for a capture header", ErrUnsupported)
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		if c.gz, err = gzip.NewReader(br); err != nil {
			return fmt.Errorf("read gzip header: %w", err)
		}
		gbr := bufio.NewReaderSize(c.gz, 256<<10)
		r = gbr
		if magic, err = gbr.Peek(4); err != nil {
			return fmt.Errorf("%w: gzip content too short for a capture header", ErrUnsupported)
		}
	}
	hdr, _ := peek(r, 24)
	switch m := binary.LittleEndian.Uint32(magic); m {
	case 0x0a0d0d0a:
		ng, err := pcapgo.NewNgReader(r, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return fmt.Errorf("read pcapng header: %w", err)
		}
		for i := 0; i < ng.NInterfaces(); i++ {
			ifc, _ := ng.Interface(i)
			if !supportedLink(ifc.LinkType) {
				return fmt.Errorf("%w: interface %d has link type %v (%d); replay reads Ethernet, Linux SLL/SLL2, raw IP and BSD loopback",
					ErrUnsupported, i, ifc.LinkType, int(ifc.LinkType))
			}
		}
		c.src, c.ng, c.link = ng, true, ng.LinkType()
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		br, ok := r.(*bufio.Reader)
		if !ok || len(hdr) < 24 {
			return fmt.Errorf("%w: file too short for a pcap header", ErrUnsupported)
		}
		pf := &pcapFile{r: br, bo: binary.ByteOrder(binary.LittleEndian), factor: 1000}
		if magic[0] == 0xa1 {
			pf.bo = binary.BigEndian
		}
		if m == 0xa1b23c4d || m == 0x4d3cb2a1 {
			pf.factor = 1
		}
		if major := pf.bo.Uint16(hdr[4:]); major != 2 {
			return fmt.Errorf("%w: pcap version %d", ErrUnsupported, major)
		}
		full := fullLinkType(magic, hdr)
		c.link = layers.LinkType(full)
		if full > 0xff && full != 276 || !supportedLink(c.link) {
			return fmt.Errorf("%w: link type %d; replay reads Ethernet, Linux SLL/SLL2, raw IP and BSD loopback", ErrUnsupported, full)
		}
		if _, err := br.Discard(24); err != nil {
			return fmt.Errorf("read pcap header: %w", err)
		}
		c.src = pf
	default:
		return fmt.Errorf("%w: not a pcap or pcapng file (starts with % x)", ErrUnsupported, magic)
	}
	return nil
}

func peek(r io.Reader, n int) ([]byte, error) {
	if br, ok := r.(*bufio.Reader); ok {
		return br.Peek(n)
	}
	return nil, io.ErrUnexpectedEOF
}

// fullLinkType reads the 32-bit link type of a pcap header (0 if short).
func fullLinkType(magic, hdr []byte) uint32 {
	if len(hdr) < 24 {
		return 0
	}
	if magic[0] == 0xa1 { // a1b2c3d4 or a1b23c4d written big-endian
		return binary.BigEndian.Uint32(hdr[20:])
	}
	return binary.LittleEndian.Uint32(hdr[20:])
}

// Link types replay converts to Ethernet.
const (
	linkNull     = layers.LinkType(0)
	linkEthernet = layers.LinkType(1)
	linkRawBSD   = layers.LinkType(12) // DLT_RAW on most BSDs
	linkRaw      = layers.LinkType(101)
	linkLoop     = layers.LinkType(108)
	linkSLL      = layers.LinkType(113)
	linkIPv4     = layers.LinkType(228)
	linkIPv6     = layers.LinkType(229)
	// LINKTYPE_LINUX_SLL2 is 276, but gopacket's LinkType is a byte, so
	// pcapgo hands it over as 276 & 0xff = 20 (a number no other link type
	// uses). The pcap header is checked for the full value.
	linkSLL2 = layers.LinkType(276 & 0xff)
)

func supportedLink(l layers.LinkType) bool {
	switch l {
	case linkNull, linkEthernet, linkRawBSD, linkRaw, linkLoop, linkSLL, linkIPv4, linkIPv6, linkSLL2:
		return true
	}
	return false
}

// Next returns the next frame as Ethernet (valid until the next call) and
// its capture time. io.EOF ends the capture. A frame that cannot be
// expressed as Ethernet (an SLL frame without a protocol) comes back
// as nil with ok false; callers count and skip it.
func (c *Capture) Next() (frame []byte, ts time.Time, ok bool, err error) {
	data, ci, err := c.src.ZeroCopyReadPacketData()
	if err != nil {
		if err == io.EOF {
			return nil, time.Time{}, false, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && c.count > 0 {
			// A capture cut short mid-packet (tcpdump killed, a copy
			// still being written) ends there; the summary says so.
			c.CutShort = true
			return nil, time.Time{}, false, io.EOF
		}
		return nil, time.Time{}, false, fmt.Errorf("read capture %s after %d packets: %w", c.Path, c.count, err)
	}
	c.count++
	ts = ci.Timestamp
	if ts.IsZero() { // pcapng simple packet blocks carry no time
		ts = c.last
	}
	c.last = ts
	link := c.link
	if c.ng && len(ci.AncillaryData) > 0 {
		if l, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			link = l
		}
	}
	frame, ok = c.toEthernet(link, data)
	if len(frame) > MaxFrame {
		frame = frame[:MaxFrame]
	}
	return frame, ts, ok, nil
}

// ethernet writes a synthesized Ethernet header with etherType and the
// payload into c.buf.
func (c *Capture) ethernet(etherType uint16, payload []byte) []byte {
	n := min(len(payload), MaxFrame-14)
	b := append(c.buf[:0], 0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, byte(etherType>>8), byte(etherType))
	b = append(b, payload[:n]...)
	c.buf = b
	return b
}

func ipEtherType(p []byte) (uint16, bool) {
	if len(p) == 0 {
		return 0, false
	}
	switch p[0] >> 4 {
	case 4:
		return 0x0800, true
	case 6:
		return 0x86dd, true
	}
	return 0, false
}

func (c *Capture) toEthernet(link layers.LinkType, d []byte) ([]byte, bool) {
	switch link {
	case linkEthernet:
		return d, true
	case linkRaw, linkRawBSD, linkIPv4, linkIPv6:
		et, ok := ipEtherType(d)
		if !ok {
			return nil, false
		}
		return c.ethernet(et, d), true
	case linkSLL: // 16-byte header, protocol (an EtherType) at 14
		if len(d) < 16 {
			return nil, false
		}
		return c.ethernet(binary.BigEndian.Uint16(d[14:]), d[16:]), true
	case linkSLL2: // 20-byte header, protocol at 0
		if len(d) < 20 {
			return nil, false
		}
		return c.ethernet(binary.BigEndian.Uint16(d[0:]), d[20:]), true
	case linkNull, linkLoop: // 4-byte address family, in the writer's or network byte order
		if len(d) < 4 {
			return nil, false
		}
		et, ok := ipEtherType(d[4:])
		if !ok {
			return nil, false
		}
		return c.ethernet(et, d[4:]), true
	}
	return nil, false
}

// BytesRead is how much of the file has been read (compressed bytes for
// gzip), for progress.
func (c *Capture) BytesRead() int64 { return c.cnt.n }

// Size is the file's size.
func (c *Capture) Size() int64 {
	if st, err := c.f.Stat(); err == nil {
		return st.Size()
	}
	return 0
}

// Close closes the file.
func (c *Capture) Close() error {
	if c.gz != nil {
		c.gz.Close()
	}
	return c.f.Close()
}

func newGzip(r io.Reader) (*gzip.Reader, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("read gzip header: %w", err)
	}
	return gz, nil
}

// pcapFile reads classic pcap records straight out of a large bufio
// buffer: a record comes back as a slice of that buffer, valid until the
// next call, so reading costs no copy and no allocation.
type pcapFile struct {
	r      *bufio.Reader
	bo     binary.ByteOrder
	factor int64 // ns per fractional unit: 1000 (µs) or 1 (ns)
	skip   int   // bytes of the previous record still to discard
	big    []byte
}

// maxRecord bounds a record's captured length; beyond it the file is
// corrupt (snap lengths are at most 256 KiB).
const maxRecord = 1 << 24

func (p *pcapFile) ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	var ci gopacket.CaptureInfo
	if p.skip > 0 {
		if _, err := p.r.Discard(p.skip); err != nil {
			return nil, ci, err
		}
		p.skip = 0
	}
	h, err := p.r.Peek(16)
	if err != nil {
		if len(h) == 0 && err == io.EOF {
			return nil, ci, io.EOF
		}
		return nil, ci, io.ErrUnexpectedEOF
	}
	sec, frac := p.bo.Uint32(h[0:]), p.bo.Uint32(h[4:])
	incl, orig := int(p.bo.Uint32(h[8:])), int(p.bo.Uint32(h[12:]))
	if incl > maxRecord {
		return nil, ci, fmt.Errorf("corrupt record: captured length %d", incl)
	}
	ci.Timestamp = time.Unix(int64(sec), int64(frac)*p.factor)
	ci.CaptureLength, ci.Length = incl, orig
	rec, err := p.r.Peek(16 + incl)
	switch {
	case err == nil:
		p.skip = 16 + incl
		return rec[16:], ci, nil
	case errors.Is(err, bufio.ErrBufferFull):
		// Larger than the buffer: copy it out.
		if _, err := p.r.Discard(16); err != nil {
			return nil, ci, io.ErrUnexpectedEOF
		}
		if cap(p.big) < incl {
			p.big = make([]byte, incl)
		}
		if _, err := io.ReadFull(p.r, p.big[:incl]); err != nil {
			return nil, ci, io.ErrUnexpectedEOF
		}
		return p.big[:incl], ci, nil
	default:
		return nil, ci, io.ErrUnexpectedEOF
	}
}
