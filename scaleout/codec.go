package scaleout

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/evidence"
)

// Record headers.
const (
	headerNode   = "kw-node"   // the producing node's name
	headerMAC    = "kw-mac"    // HMAC-SHA256 (with a record key file)
	headerAction = "kw-action" // an alert record's action (created, upgraded)
)

// maxRecordBytes bounds a record of knockwatch's own topics that a
// consumer decodes (an evidence item is at most a few KiB; the evidence
// log's own bound is 16 MiB).
const maxRecordBytes = 1 << 20

// Errors of records read from a topic; the consumers count them by reason.
var (
	ErrForged    = errors.New("record without a valid kw-mac")
	ErrBadRecord = errors.New("malformed record")
)

// authenticator signs and checks records with the deployment's key.
type authenticator struct{ key []byte }

// mac is HMAC-SHA256 over the topic, the key, the node and the value,
// each length-prefixed so no two records share an input: a record copied
// into another topic, or given another key, does not verify.
func (a *authenticator) mac(topic string, key []byte, node string, value []byte) []byte {
	h := hmac.New(sha256.New, a.key)
	var n [binary.MaxVarintLen64]byte
	for _, part := range [][]byte{[]byte(topic), key, []byte(node), value} {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(part)))])
		h.Write(part)
	}
	return h.Sum(nil)
}

// seal adds the node header and, with a key, the MAC to r (its Topic, Key
// and Value set).
func (s *session) seal(r *kgo.Record) {
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerNode, Value: []byte(s.cfg.Node)})
	if s.auth != nil {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerMAC, Value: s.auth.mac(r.Topic, r.Key, s.cfg.Node, r.Value)})
	}
}

// header returns the value of r's first header named k.
func header(r *kgo.Record, k string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return h.Value, true
		}
	}
	return nil, false
}

// open checks a record of knockwatch's own topics: its size and, with a
// key, its MAC. It returns the producing node.
func (s *session) open(r *kgo.Record) (string, error) {
	if len(r.Value) > maxRecordBytes {
		return "", fmt.Errorf("%w: %d bytes", ErrBadRecord, len(r.Value))
	}
	node, _ := header(r, headerNode)
	if s.auth == nil {
		return string(node), nil
	}
	got, ok := header(r, headerMAC)
	if !ok || !hmac.Equal(got, s.auth.mac(r.Topic, r.Key, string(node), r.Value)) {
		return string(node), ErrForged
	}
	return string(node), nil
}

// partitionFor maps a record key to a partition: FNV-1a, the same in
// every knockwatch producer, so a host's evidence meets in one partition
// whichever node produced it.
func partitionFor(key []byte, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	h.Write(key)
	return int(h.Sum32() % uint32(n))
}

// partitioner partitions keyed records by partitionFor and unkeyed ones
// (broadcast copies) by the Partition they were given.
func partitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, n int) int {
			if r.Key == nil {
				return int(r.Partition) % n
			}
			return partitionFor(r.Key, n)
		}
	})
}

// hostKey is the record key of evidence about host address a.
func hostKey(a netip.Addr) []byte { return []byte(a.Unmap().WithZone("").String()) }

// evidenceRecords returns the records of one item: a knock or handshake
// keyed by its destination; a change once per address it resolves to,
// and when it resolves to none, once per partition (n of them) so the
// correlator owning the host's addresses has it whenever an inventory
// names them.
func evidenceRecords(topic string, it *evidence.Item, resolve func(string) []netip.Addr, n int) ([]*kgo.Record, bool, error) {
	value, err := evidence.AppendItem(nil, it)
	if err != nil {
		return nil, false, err
	}
	ts := it.Arrival
	if ts.IsZero() {
		ts = time.Now()
	}
	mk := func(key []byte) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: key, Value: value, Timestamp: ts}
	}
	switch it.Kind() {
	case evidence.KindKnock:
		return []*kgo.Record{mk(hostKey(it.Knock.Dst))}, false, nil
	case evidence.KindHandshake:
		return []*kgo.Record{mk(hostKey(it.Handshake.Dst))}, false, nil
	}
	c := it.Change
	var ips []netip.Addr
	add := func(ip netip.Addr) {
		ip = ip.Unmap().WithZone("")
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsLoopback() {
			return
		}
		for _, x := range ips {
			if x == ip {
				return
			}
		}
		ips = append(ips, ip)
	}
	for _, ip := range c.HostIPs {
		add(ip)
	}
	if resolve != nil && c.Host != "" {
		for _, ip := range resolve(c.Host) {
			add(ip)
		}
	}
	if len(ips) > 0 {
		out := make([]*kgo.Record, len(ips))
		for i, ip := range ips {
			out[i] = mk(hostKey(ip))
		}
		return out, false, nil
	}
	out := make([]*kgo.Record, max(n, 1))
	for p := range out {
		r := mk(nil)
		r.Partition = int32(p)
		out[p] = r
	}
	return out, true, nil
}

// flag is one flag as the flags topic carries it.
type flag struct {
	Src, Dst netip.Addr
	// Until is when the flag expires (the KNOCK's flag time plus the
	// sensor's flag_ttl); FlagTime when it was raised.
	Until, FlagTime time.Time
	Epoch           uint32
	// Instance is the producing process's random id.
	Instance string
}

const flagVersion = 1

func appendFlag(b []byte, f *flag) []byte {
	b = append(b, flagVersion)
	b = appendAddr(b, f.Src)
	b = appendAddr(b, f.Dst)
	b = binary.AppendVarint(b, f.Until.UnixNano())
	b = binary.AppendVarint(b, f.FlagTime.UnixNano())
	b = binary.AppendUvarint(b, uint64(f.Epoch))
	b = binary.AppendUvarint(b, uint64(len(f.Instance)))
	return append(b, f.Instance...)
}

func appendAddr(b []byte, a netip.Addr) []byte {
	a = a.Unmap().WithZone("")
	s := a.AsSlice()
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func decodeFlag(p []byte) (flag, error) {
	var f flag
	bad := func(what string) (flag, error) { return flag{}, fmt.Errorf("%w: flag: %s", ErrBadRecord, what) }
	if len(p) < 1 || p[0] != flagVersion {
		return bad("version")
	}
	p = p[1:]
	for _, dst := range []*netip.Addr{&f.Src, &f.Dst} {
		if len(p) < 1 || (p[0] != 4 && p[0] != 16) || len(p) < 1+int(p[0]) {
			return bad("address")
		}
		a, _ := netip.AddrFromSlice(p[1 : 1+p[0]])
		*dst, p = a, p[1+p[0]:]
	}
	var ts [2]int64
	for i := range ts {
		v, n := binary.Varint(p)
		if n <= 0 {
			return bad("time")
		}
		ts[i], p = v, p[n:]
	}
	f.Until, f.FlagTime = time.Unix(0, ts[0]).UTC(), time.Unix(0, ts[1]).UTC()
	e, n := binary.Uvarint(p)
	if n <= 0 || e >= 1<<32 {
		return bad("epoch")
	}
	f.Epoch, p = uint32(e), p[n:]
	l, n := binary.Uvarint(p)
	if n <= 0 || l > 64 || uint64(len(p)-n) != l {
		return bad("instance")
	}
	f.Instance = string(p[n:])
	return f, nil
}
