//go:build unix

package intake

import (
	"os"
	"syscall"
)

// fileIdentity is the (device, inode) that survives a rename, so a rotated
// file keeps its position.
func fileIdentity(_ string, fi os.FileInfo) (fileKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, false
	}
	return fileKey{uint64(st.Dev), st.Ino}, true
}
