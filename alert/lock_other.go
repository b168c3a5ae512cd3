//go:build !unix

package alert

import "os"

// Off Unix the spool directory is not locked against a second sink: run
// one sink per spool directory.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) {}
