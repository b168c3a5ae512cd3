// Package kafkatest runs a fake Kafka cluster for tests and for `make
// demo-cluster`: franz-go's kfake, several brokers over real TCP on
// loopback, optionally persisted to a directory so that it can be
// stopped and started again on the same ports (a broker outage).
//
// kfake is an in-process imitation of a broker: it speaks the protocol
// (produce, fetch, groups, transactions, ACLs, SASL) but replicates
// nothing and measures nothing of a real broker's performance. It is a
// development tool: the knockwatch binary never links this package
// (internal/archtest holds that).
package kafkatest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures a Cluster.
type Config struct {
	// Brokers is the number of brokers (default 3).
	Brokers int
	// Ports are the brokers' ports on 127.0.0.1 (default: free ones,
	// chosen once and kept across Stop and Start).
	Ports []int
	// DataDir persists the cluster's data so that Start after Stop finds
	// it again; empty: in memory (Stop loses everything).
	DataDir string
	// Listen, when set, opens the brokers' listeners (a network
	// namespace's: netns.Namespace.Listen); default net.Listen.
	Listen func(network, address string) (net.Listener, error)
	// Opts are further kfake options (SASL, ACLs, broker configs).
	Opts []kfake.Opt
}

// Cluster is a fake Kafka cluster.
type Cluster struct {
	cfg Config
	mu  sync.Mutex
	c   *kfake.Cluster
}

// Start starts a cluster.
func Start(cfg Config) (*Cluster, error) {
	if cfg.Brokers <= 0 {
		cfg.Brokers = 3
	}
	if len(cfg.Ports) == 0 {
		ports, err := FreePorts(cfg.Brokers)
		if err != nil {
			return nil, err
		}
		cfg.Ports = ports
	}
	if len(cfg.Ports) != cfg.Brokers {
		return nil, fmt.Errorf("start fake kafka: %d ports for %d brokers", len(cfg.Ports), cfg.Brokers)
	}
	k := &Cluster{cfg: cfg}
	if err := k.Start(); err != nil {
		return nil, err
	}
	return k, nil
}

// FreePorts returns n ports free on 127.0.0.1 now.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start (re)starts the brokers on their ports; with a DataDir they find
// their data again. Binding a port just released may take a moment: it is
// retried for a few seconds.
func (k *Cluster) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		return errors.New("start fake kafka: already running")
	}
	opts := []kfake.Opt{kfake.Ports(k.cfg.Ports...), kfake.ClusterID("knockwatch-kfake"),
		kfake.GroupMinSessionTimeout(time.Second)}
	if k.cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(k.cfg.DataDir))
	}
	if k.cfg.Listen != nil {
		opts = append(opts, kfake.ListenFn(k.cfg.Listen))
	}
	opts = append(opts, k.cfg.Opts...)
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		var c *kfake.Cluster
		if c, err = kfake.NewCluster(opts...); err == nil {
			k.c = c
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start fake kafka on ports %v: %w", k.cfg.Ports, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops every broker (a cluster outage): clients get connection
// refused until Start. With a DataDir the data is saved first.
func (k *Cluster) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// Close stops the cluster for good.
func (k *Cluster) Close() { k.Stop() }

// Addrs are the brokers' host:port.
func (k *Cluster) Addrs() []string {
	out := make([]string, len(k.cfg.Ports))
	for i, p := range k.cfg.Ports {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return out
}

// Fake returns the running kfake cluster (nil while stopped), for
// fault injection in tests.
func (k *Cluster) Fake() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c
}
