// Package archtest holds the test that keeps the code's layering equal to
// what docs/ARCHITECTURE.md says: every package's imports within the module
// against the doc's table of import rules, and no cilium/ebpf or netlink
// below the kernel line. It has no code of its own.
package archtest
