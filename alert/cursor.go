package alert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/knockwatch/knockwatch/internal/frame"
)

// The cursor file holds the committed spool position, the first byte not yet
// delivered: magic "KWC1" | segment (uint64 LE) | offset (uint64 LE) |
// CRC-32C of the 20 bytes before it. It is replaced atomically (write a
// temporary file, fsync, rename, fsync the directory).

func readCursor(path string) (position, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return position{}, false, nil
	}
	if err != nil {
		return position{}, false, fmt.Errorf("read spool cursor: %w", err)
	}
	if len(b) != cursorSize || string(b[:4]) != cursorMagic ||
		frame.Checksum(b[:20]) != binary.LittleEndian.Uint32(b[20:]) {
		return position{}, false, fmt.Errorf("read spool cursor %s: damaged (%d bytes)", path, len(b))
	}
	off := binary.LittleEndian.Uint64(b[12:])
	if off > 1<<62 {
		return position{}, false, fmt.Errorf("read spool cursor %s: offset %d out of range", path, off)
	}
	return position{seg: binary.LittleEndian.Uint64(b[4:]), off: int64(off)}, true, nil
}

func writeCursor(dir string, p position) error {
	b := make([]byte, 0, cursorSize)
	b = append(b, cursorMagic...)
	b = binary.LittleEndian.AppendUint64(b, p.seg)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.off))
	b = binary.LittleEndian.AppendUint32(b, frame.Checksum(b))
	tmp := filepath.Join(dir, cursorName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write spool cursor: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, cursorName))
	}
	if err != nil {
		return fmt.Errorf("write spool cursor: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync spool dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync spool dir: %w", err)
	}
	return nil
}
