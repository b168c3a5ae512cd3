//go:build !unix

package evidence

import "os"

// Off Unix the state directory is not locked against a second process: run
// one knockwatch per --state-dir.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) {}
