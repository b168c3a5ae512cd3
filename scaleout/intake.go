package scaleout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/winevents/intake"
)

// TransportKafka names events from a forwarder's raw topic (intake.Message
// Transport and the intake metrics' transport label).
const TransportKafka = "kafka"

// Message meta keys of raw-topic events.
const (
	MetaTopic     = "kafka_topic"
	MetaPartition = "kafka_partition"
	MetaOffset    = "kafka_offset"
)

// maxRawRecordBytes bounds one raw record handed to the decoders (the
// HTTP listener's default body limit).
const maxRawRecordBytes = 10 << 20

// RawIntake consumes the forwarders' raw topics (Winlogbeat output.kafka,
// NXLog om_kafka, OpenWEC's Kafka output: one event per record, any format
// the decoders read) into an intake.Handler, in the intake consumer group.
// An offset is committed only after the handler took the records before it
// and its Sync (intake.Syncer) made them durable: a crash or rebalance
// hands the rest to another member, which reads them again (the engine
// recognises a repeat). While the handler is busy (the brokers behind,
// the alert queue full) the record is offered again with a growing pause:
// the raw topic is the buffer.
type RawIntake struct {
	s      *session
	cl     *kgo.Client
	h      intake.Handler
	ident  map[string]string
	log    *zap.Logger
	cancel context.CancelFunc
	done   chan struct{}

	received, bytes, accepted, rejected, unreadable, tooLarge, busy, notDurable, commits, commitErrs atomic.Uint64
}

// NewRawIntake joins the intake group on cfg.Topics.Raw and feeds h.
func NewRawIntake(cfg Config, h intake.Handler) (*RawIntake, error) {
	if len(cfg.Topics.Raw) == 0 {
		return nil, errors.New("raw intake: no kafka.topics.raw")
	}
	s, err := newSession(cfg)
	if err != nil {
		return nil, err
	}
	ri := &RawIntake{s: s, h: h, ident: map[string]string{}, log: cfg.Logger.Named("scaleout.intake"), done: make(chan struct{})}
	topics := make([]string, 0, len(cfg.Topics.Raw))
	for _, t := range cfg.Topics.Raw {
		topics = append(topics, t.Topic)
		ri.ident[t.Topic] = t.Identity
	}
	ri.cl, err = s.client(
		kgo.ConsumerGroup(cfg.IntakeGroup),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.FetchMaxBytes(64<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("join group %s: %w", cfg.IntakeGroup, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ri.cancel = cancel
	go ri.run(ctx)
	ri.log.Info("kafka intake consuming", zap.Strings("topics", topics), zap.String("group", cfg.IntakeGroup))
	return ri, nil
}

func (ri *RawIntake) run(ctx context.Context) {
	defer close(ri.done)
	for {
		fs := ri.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ri.log.Warn("read raw topic", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		if fs.Empty() {
			continue
		}
		stopped := false
		fs.EachRecord(func(r *kgo.Record) {
			if stopped {
				return
			}
			if !ri.handle(ctx, r) {
				stopped = true
			}
		})
		if stopped {
			return // shutting down: nothing after the last durable record is committed
		}
		if !ri.sync(ctx) {
			return
		}
		if err := ri.cl.CommitUncommittedOffsets(ctx); err != nil {
			ri.commitErrs.Add(1)
			if ctx.Err() == nil {
				ri.log.Warn("commit raw topic offsets (the records are read again after a restart)", zap.Error(err))
			}
			continue
		}
		ri.commits.Add(1)
	}
}

// handle offers one record until the handler takes it; false when ctx
// ended first.
func (ri *RawIntake) handle(ctx context.Context, r *kgo.Record) bool {
	ri.received.Add(1)
	ri.bytes.Add(uint64(len(r.Value)))
	if len(r.Value) > maxRawRecordBytes {
		ri.tooLarge.Add(1)
		return true
	}
	received := time.Now()
	// The record's time is when the forwarder put it on the bus: the
	// arrival, also when this intake reads it late (catching up).
	if ts := r.Timestamp; !ts.IsZero() && ts.Before(received.Add(time.Minute)) && received.Sub(ts) < 30*24*time.Hour {
		received = ts
	}
	m := intake.Message{Transport: TransportKafka, Remote: r.Topic + "/" + strconv.Itoa(int(r.Partition)), Payload: r.Value,
		Received: received, Meta: map[string]string{MetaTopic: r.Topic, MetaPartition: strconv.Itoa(int(r.Partition)),
			MetaOffset: strconv.FormatInt(r.Offset, 10)}}
	if id := ri.ident[r.Topic]; id != "" {
		m.Meta[intake.MetaTokenName] = id
	}
	stalled := false
	for attempt := 0; ; attempt++ {
		res := ri.h.Handle(ctx, m)
		if errors.Is(res.Err, intake.ErrBusy) {
			if !stalled {
				stalled = true
				if errors.Is(res.Err, intake.ErrNotDurable) {
					ri.notDurable.Add(1)
				} else {
					ri.busy.Add(1)
				}
			}
			if !sleepCtx(ctx, backoff(attempt)) {
				return false
			}
			continue
		}
		ri.accepted.Add(uint64(max(res.Accepted, 0)))
		ri.rejected.Add(uint64(max(res.Rejected, 0)))
		if res.Err != nil {
			ri.unreadable.Add(1)
		}
		return true
	}
}

// sync waits until the handler made what it took durable; false when ctx
// ended first.
func (ri *RawIntake) sync(ctx context.Context) bool {
	s, ok := ri.h.(intake.Syncer)
	if !ok {
		return true
	}
	for attempt := 0; ; attempt++ {
		err := s.Sync(ctx)
		if err == nil {
			return true
		}
		if attempt == 0 {
			ri.notDurable.Add(1)
		}
		if !sleepCtx(ctx, backoff(attempt)) {
			return false
		}
	}
}

func backoff(attempt int) time.Duration {
	return min(10*time.Millisecond<<min(attempt, 7), time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close stops consuming (what was handled but not yet durable is read
// again by the next owner) and leaves the group.
func (ri *RawIntake) Close() error {
	ri.cancel()
	<-ri.done
	ri.cl.Close()
	return nil
}

// Stats snapshots the counters as an intake transport's.
func (ri *RawIntake) Stats() intake.Stats {
	return intake.Stats{Transport: TransportKafka, Received: ri.received.Load(), Bytes: ri.bytes.Load(),
		Accepted: ri.accepted.Load(), Rejected: ri.rejected.Load(),
		Dropped: map[string]uint64{intake.ReasonUnreadable: ri.unreadable.Load(), intake.ReasonTooLarge: ri.tooLarge.Load(),
			intake.ReasonBusy: ri.busy.Load(), intake.ReasonNotDurable: ri.notDurable.Load()}}
}
