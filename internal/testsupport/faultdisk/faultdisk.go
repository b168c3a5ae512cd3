// Package faultdisk injects fsync failures the way Linux reports them, for
// the evidence log's and the alert ledger's fault tests
// (evidence.LogConfig.SyncFile, evidence.LedgerConfig.SyncFile).
//
// When the kernel cannot write a file's dirty pages back, the next fsync
// returns EIO once; the pages are marked clean (their data may never reach
// the disk, and is gone once they are evicted or the machine stops) and a
// later fsync of the same file succeeds without them. Disk models the
// worst case at once: a failed fsync zeroes every byte written to the file
// since its last good fsync, so whatever the caller still counts on there is
// visibly lost, and the next fsync succeeds.
package faultdisk

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Disk is an fsync with injected failures. Its methods are safe for
// concurrent use.
type Disk struct {
	mu      sync.Mutex
	durable map[string]int64 // path → size at its last good fsync
	fail    int              // the next fsyncs that fail
	down    bool             // every fsync fails: a power cut
	failed  int
	synced  int
}

// New returns a disk on which every fsync succeeds until told otherwise.
func New() *Disk { return &Disk{durable: map[string]int64{}} }

// FailNext makes the next n fsyncs fail.
func (d *Disk) FailNext(n int) {
	d.mu.Lock()
	d.fail += n
	d.mu.Unlock()
}

// Heal ends injected failures: fsyncs succeed again.
func (d *Disk) Heal() {
	d.mu.Lock()
	d.fail, d.down = 0, false
	d.mu.Unlock()
}

// PowerCut makes every later fsync fail and lose what it would have made
// durable: what a closing process still fsyncs does not survive, as after
// kill -9 followed by a power cut.
func (d *Disk) PowerCut() {
	d.mu.Lock()
	d.down = true
	d.mu.Unlock()
}

// Failed and Synced count the failed and the good fsyncs so far.
func (d *Disk) Failed() int { d.mu.Lock(); defer d.mu.Unlock(); return d.failed }

// Synced counts the good fsyncs so far.
func (d *Disk) Synced() int { d.mu.Lock(); defer d.mu.Unlock(); return d.synced }

// Sync fsyncs f, or fails with EIO (injected) and zeroes what f gained
// since its last good fsync. It is the SyncFile hook.
func (d *Disk) Sync(f *os.File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	name := f.Name()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if d.down || d.fail > 0 {
		if d.fail > 0 {
			d.fail--
		}
		d.failed++
		if err := zero(name, d.durable[name], info.Size()); err != nil {
			return fmt.Errorf("faultdisk: lose %s: %w", name, err)
		}
		return &os.PathError{Op: "sync", Path: name, Err: syscall.EIO}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	d.synced++
	d.durable[name] = info.Size()
	return nil
}

// zero overwrites [from, to) of the file at path with zeros (through its
// own descriptor: the caller's may be append-only).
func zero(path string, from, to int64) error {
	if to <= from {
		return nil
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = w.WriteAt(make([]byte, to-from), from)
	return err
}
