package intake

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
)

// fingerprintLen is how many leading bytes identify a file beyond its inode
// (inodes are reused after a delete).
const fingerprintLen = 1024

type fileKey struct{ Dev, Ino uint64 }

// fileState is one followed file's persisted position.
type fileState struct {
	Path   string `json:"path"`
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"inode"`
	Offset int64  `json:"offset"` // end of the last record the handler took
	FPLen  int64  `json:"fp_len"` // fingerprint: FNV-1a of the first FPLen bytes
	FPSum  uint64 `json:"fp_sum"`
}

type stateFile struct {
	Version int         `json:"version"`
	Files   []fileState `json:"files"`
}

func loadState(path string) (map[fileKey]fileState, error) {
	out := map[fileKey]fileState{}
	if path == "" {
		return out, nil
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read file state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("read file state %s: %w (delete it to start over from the beginning of every file)", path, err)
	}
	if sf.Version != 1 {
		return nil, fmt.Errorf("read file state %s: unknown version %d", path, sf.Version)
	}
	for _, fs := range sf.Files {
		out[fileKey{fs.Dev, fs.Ino}] = fs
	}
	return out, nil
}

// saveState writes the state atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync the directory.
func saveState(path string, files []fileState) error {
	b, err := json.MarshalIndent(stateFile{Version: 1, Files: files}, "", " ")
	if err != nil {
		return fmt.Errorf("encode file state: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write file state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write file state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("sync file state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write file state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace file state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// fingerprint hashes the first n bytes of f.
func fingerprint(f *os.File, n int64) (uint64, error) {
	h := fnv.New64a()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return 0, err
	}
	return h.Sum64(), nil
}
