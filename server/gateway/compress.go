package gateway

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
)

// maxMessageBytes bounds one request message, decompressed, on every
// handler (feedgate's services, health and reflection).
const maxMessageBytes = 1 << 20

// boundedGzip is connect's gzip with decompression that stops at the
// message limit. connect-go's own gzip, asked for a message over
// WithReadMaxBytes, inflates the rest to the end only to report its size:
// a 1 MB gzip bomb is a gigabyte of work.
func boundedGzip(limit int64) connect.HandlerOption {
	return connect.WithCompression("gzip",
		func() connect.Decompressor { return &limitedGzip{limit: limit} },
		func() connect.Compressor { return gzip.NewWriter(io.Discard) },
	)
}

// limitedGzip is a gzip reader that fails once it has produced more than
// limit bytes.
type limitedGzip struct {
	gz    *gzip.Reader
	n     int64
	limit int64
}

func (l *limitedGzip) errTooLarge() error {
	return connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("message larger than %d bytes after decompression", l.limit))
}

func (l *limitedGzip) Read(p []byte) (int, error) {
	if l.gz == nil {
		return 0, errors.New("gzip: reader not reset")
	}
	if l.n > l.limit {
		return 0, l.errTooLarge()
	}
	if room := l.limit - l.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.gz.Read(p)
	l.n += int64(n)
	if l.n > l.limit {
		return n, l.errTooLarge()
	}
	return n, err
}

func (l *limitedGzip) Reset(r io.Reader) error {
	l.n = 0
	if l.gz == nil {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		l.gz = gz
		return nil
	}
	return l.gz.Reset(r)
}

func (l *limitedGzip) Close() error {
	if l.gz == nil {
		return nil
	}
	return l.gz.Close()
}
