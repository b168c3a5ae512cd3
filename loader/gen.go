package loader

// The BPF objects are generated from ../bpf with a pinned clang (clang-19) and
// committed, so `go build` needs no C toolchain. `make generate` runs this;
// CI runs it again and fails if the output differs.
//
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -type knock_rec -type handshake_rec -type touch_rec -type kw_sweep_args -type kw_counter -type kw_if_counter knockwatch ../bpf/knockwatch.c -- -mcpu=v3 -I../bpf/include -I/usr/include/x86_64-linux-gnu -Wall -Werror
