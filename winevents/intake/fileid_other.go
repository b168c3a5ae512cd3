//go:build !unix

package intake

import (
	"hash/fnv"
	"os"
)

// fileIdentity off Unix has no inode: the path stands in for it, so a
// renamed file is read as a new one (rotation by copytruncate still works).
func fileIdentity(path string, _ os.FileInfo) (fileKey, bool) {
	h := fnv.New64a()
	h.Write([]byte(path))
	return fileKey{0, h.Sum64()}, true
}
