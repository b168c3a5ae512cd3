//go:build linux

// Command demo-cluster is `make demo-cluster`: issue 14's case 1 on one
// machine (internal/clusterlab). Two taps, a fake Kafka cluster (a
// development tool: kfake, never part of the knockwatch binary), knockwatch
// in roles from --knockwatch; a knock on tap A, the connection on tap B,
// the Windows event through a forwarder's raw topic; it prints the alert
// read from the alert topic with kcat. Root.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/knockwatch/knockwatch/internal/clusterlab"
	"github.com/knockwatch/knockwatch/internal/netns"
)

func main() {
	bin := flag.String("knockwatch", "bin/knockwatch", "the knockwatch `binary` to run in roles")
	correlators := flag.Int("correlators", 2, "correlators in the group")
	kcat := flag.String("kcat", "kcat", "the kcat `binary`")
	flag.Parse()
	if err := run(*bin, *correlators, *kcat); err != nil {
		fmt.Fprintln(os.Stderr, "demo-cluster:", err)
		os.Exit(1)
	}
}

func run(bin string, correlators int, kcat string) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (make build first)", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "knockwatch-demo-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lab, err := clusterlab.Start(ctx, clusterlab.Config{
		Command: func(ctx context.Context, ns *netns.Namespace, args []string) *exec.Cmd {
			if ns == nil {
				return exec.CommandContext(ctx, bin, append([]string{"run"}, args...)...)
			}
			return ns.Command(ctx, bin, append([]string{"run"}, args...)...)
		},
		Kcat: kcat, Dir: dir, Correlators: correlators, Out: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer lab.Close()
	r, err := lab.Attack(ctx)
	if err != nil {
		if os.Getenv("KNOCKWATCH_DEMO_DEBUG") != "" {
			for name, p := range lab.Procs {
				m, err := p.Scrape(context.Background())
				if err != nil {
					m = err.Error()
				}
				fmt.Fprintf(os.Stderr, "==== %s\n%s\n%s\n", name, p.Logs(), m)
			}
		}
		return err
	}
	fmt.Printf("\ntap A reported %v knock(s) and %v handshake(s); tap B %v knock(s) and %v handshake(s), from %v remote flag(s)\n",
		r.KnocksA, r.HandshakesA, r.KnocksB, r.HandshakesB, r.RemoteFlagsB)
	fmt.Printf("alert topic %s (read with kcat, read_committed): %d record(s)\n", clusterlab.AlertTopic, len(r.Alerts))
	for _, a := range r.Alerts {
		var v any
		_ = json.Unmarshal([]byte(a.JSON), &v)
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Println(string(b))
	}
	if len(r.Alerts) != 1 || r.Alerts[0].Confidence != "high" {
		return fmt.Errorf("want one high alert, got %d records", len(r.Alerts))
	}
	fmt.Printf("\none high alert: %v knocked on tap A, connected to %v:%d on tap B\n", r.Alerts[0].Source, r.Alerts[0].Destination, r.Alerts[0].Port)
	return nil
}
