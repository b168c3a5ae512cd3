//go:build !linux

package main

import "io"

// isTerminal: replay's progress is drawn on Linux terminals only
// (terminal_linux.go asks the kernel with TCGETS).
func isTerminal(io.Writer) bool { return false }
