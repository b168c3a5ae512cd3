package loader

// The benchmarks' own BPF programs (bpf/bench/): the LRU reference that the
// XDP rows are measured against and the in-kernel flood feeder. Generated
// into _test files (bpf2go takes the suffix from this file's name), so
// neither ships in the binary; `make generate` regenerates them with the
// sensor's objects and CI checks that they match their sources.
//
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel lruref ../bpf/bench/lruref.c -- -mcpu=v3 -I../bpf/include -I/usr/include/x86_64-linux-gnu -Wall -Werror
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel benchfeed ../bpf/bench/feed.c -- -mcpu=v3 -I../bpf/include -I/usr/include/x86_64-linux-gnu -Wall -Werror
