package intake

import (
	"bytes"
	"errors"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// This file holds the record side of the file follower: reading what is new
// in a file, splitting it into records and committing positions.

// read delivers the complete records that are new in fl; it reports whether
// the file had new data.
func (ff *FileFollower) read(fl *followed) bool {
	fi, err := fl.f.Stat()
	if err != nil {
		ff.c.drop(rIO)
		return false
	}
	rewritten := false
	if fl.fpLen > 0 && fi.Size() >= fl.fpLen {
		if sum, err := fingerprint(fl.f, fl.fpLen); err == nil && sum != fl.fpSum {
			rewritten = true // truncated and written again past our position between two polls
		}
	}
	if fi.Size() < fl.readPos || rewritten {
		ff.c.drop(rTruncated)
		ff.log.Info("file truncated (copytruncate): reading from the start", zap.String(fPath, fl.path),
			zap.Int64(fOffset, fl.readPos), zap.Int64(fSize, fi.Size()))
		fl.offset, fl.readPos, fl.pending, fl.skipping, fl.xml = 0, 0, fl.pending[:0], false, 0
		fl.fpLen, fl.fpSum, fl.fpBuf, fl.fpFrozen = 0, 0, fl.fpBuf[:0], false
		ff.dirty = true
	}
	if fi.Size() == fl.readPos {
		return false
	}
	if fl.xml == 0 {
		fl.xml = detectFormat(fl.f)
	}
	buf := make([]byte, 64<<10)
	for fl.readPos < fi.Size() && ff.ctx.Err() == nil {
		n, err := fl.f.ReadAt(buf, fl.readPos)
		if n > 0 {
			if !ff.consume(fl, buf[:n]) {
				return true
			}
		}
		if err != nil {
			if err != io.EOF {
				ff.c.drop(rIO)
				ff.log.Warn("read followed file", zap.String(fPath, fl.path), zap.Error(err))
			}
			break
		}
	}
	return true
}

// detectFormat looks at the first non-blank byte: '<' is Event XML, anything
// else JSON lines.
func detectFormat(f *os.File) int8 {
	var head [4096]byte
	n, _ := f.ReadAt(head[:], 0)
	b := bytes.TrimLeft(bytes.TrimPrefix(bytes.TrimLeft(head[:n], " \t\r\n"), utf8BOM), " \t\r\n")
	switch {
	case len(b) == 0:
		return 0
	case b[0] == '<':
		return 1
	default:
		return -1
	}
}

var (
	xmlEnd   = []byte("</Event>")
	xmlStart = []byte("<Event")
)

// consume appends data (read at fl.readPos) and delivers complete records.
// It returns false when the handler could not take a record (shutdown while
// busy): the position stays before it.
func (ff *FileFollower) consume(fl *followed, data []byte) bool {
	start := fl.readPos
	fl.readPos += int64(len(data))
	fl.extendFingerprint(start, data)
	delim := []byte{'\n'}
	if fl.xml == 1 {
		delim = xmlEnd
	}
	for len(data) > 0 {
		if fl.skipping {
			i := bytes.Index(data, delim) // a delimiter split across reads is missed: the next one ends the skip
			if i < 0 {
				return true
			}
			start += int64(i + len(delim))
			data = data[i+len(delim):]
			fl.skipping, fl.offset, fl.pending = false, start, fl.pending[:0]
			ff.dirty = true
			continue
		}
		scanFrom := max(len(fl.pending)-len(delim)+1, 0)
		fl.pending = append(fl.pending, data...)
		data = nil
		for {
			i := bytes.Index(fl.pending[scanFrom:], delim)
			if i < 0 {
				break
			}
			end := scanFrom + i + len(delim)
			rec := fl.pending[:end]
			if end-len(delim) > ff.cfg.MaxRecordBytes {
				ff.tooLarge(fl)
				rec = nil
			}
			if !ff.deliver(fl, rec, fl.offset+int64(end)) {
				fl.readPos = fl.offset
				fl.pending = fl.pending[:0]
				return false
			}
			fl.pending = fl.pending[:copy(fl.pending, fl.pending[end:])]
			scanFrom = 0
		}
		if len(fl.pending) > ff.cfg.MaxRecordBytes {
			ff.tooLarge(fl)
			fl.skipping, fl.pending = true, fl.pending[:0]
		}
	}
	return true
}

func (ff *FileFollower) tooLarge(fl *followed) {
	ff.c.drop(rTooLarge)
	ff.log.Warn("record over the size limit skipped", zap.String(fPath, fl.path),
		zap.Int64(fOffset, fl.offset), zap.Int(fLimit, ff.cfg.MaxRecordBytes))
}

// deliver hands one record to the handler and, once taken, moves the
// committed offset to end.
func (ff *FileFollower) deliver(fl *followed, rec []byte, end int64) bool {
	payload := recordPayload(rec, fl.xml == 1)
	if len(payload) > 0 {
		m := Message{Transport: TransportFile, Remote: fl.path, Payload: append([]byte(nil), payload...),
			Received: time.Now(), Meta: map[string]string{MetaPath: fl.path, MetaOffset: strconv.FormatInt(fl.offset, 10)}}
		res, why, stalled := handleWithRetry(ff.ctx, ff.h, m)
		if stalled {
			ff.c.drop(why)
		}
		if errors.Is(res.Err, ErrBusy) {
			return false
		}
		ff.c.result(len(m.Payload), res)
		if res.Err != nil {
			ff.c.drop(rUnreadable)
		}
	}
	fl.offset = end
	ff.dirty = true
	return true
}

// recordPayload trims a line, or cuts an XML record down to its <Event>
// element (dropping an XML declaration, an <Events> wrapper, white space).
func recordPayload(rec []byte, xml bool) []byte {
	if !xml {
		return bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(rec), utf8BOM))
	}
	for off := 0; ; {
		i := bytes.Index(rec[off:], xmlStart)
		if i < 0 {
			return nil
		}
		j := off + i + len(xmlStart)
		if j < len(rec) && (rec[j] == ' ' || rec[j] == '>' || rec[j] == '\t' || rec[j] == '\n' || rec[j] == '\r') {
			return rec[off+i:]
		}
		off = j
	}
}

// extendFingerprint hashes the file's first bytes from the data actually
// read (re-reading them later could hash a rewrite we never read).
func (fl *followed) extendFingerprint(at int64, data []byte) {
	if fl.fpFrozen || at != int64(len(fl.fpBuf)) || len(fl.fpBuf) >= fingerprintLen {
		return
	}
	fl.fpBuf = append(fl.fpBuf, data[:min(len(data), fingerprintLen-len(fl.fpBuf))]...)
	h := fnv.New64a()
	_, _ = h.Write(fl.fpBuf)
	fl.fpLen, fl.fpSum = int64(len(fl.fpBuf)), h.Sum64()
}
