package intake

import (
	"errors"
	"net"
	"os"
	"time"
)

// Defaults applied to zero config fields.
const (
	DefaultMaxBodyBytes      = 10 << 20 // HTTP request body, before and after gzip
	DefaultMaxMessageBytes   = 256 << 10
	DefaultMaxConns          = 256
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultBeatsMaxEvent     = 1 << 20
	DefaultBeatsMaxBatch     = 64 << 20 // decompressed bytes one Beats connection holds at once
	DefaultBeatsMaxEvents    = 16384    // events one Beats connection hands on at once
	DefaultBeatsMaxConns     = 64
	DefaultBeatsTimeout      = 30 * time.Second
	DefaultPreAuthConns      = 64
	DefaultPreAuthPerSource  = 8
	DefaultPreAuthTimeout    = 10 * time.Second
	DefaultMemoryBudget      = 256 << 20
	maxUDPDatagram           = 65535
)

// log field names.
const (
	fTransport = "transport"
	fAddr      = "addr"
	fRemote    = "remote"
	fReason    = "reason"
	fPath      = "path"
	fSize      = "size"
	fLimit     = "limit"
	fOffset    = "offset"
	fInode     = "inode"
)

func orDefault[T int | int64 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
