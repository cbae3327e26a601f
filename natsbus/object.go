package natsbus

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ObjectAhead bounds how far PutObject reads ahead of what the server has stored: well
// under the 128 MB a stream queues before it refuses publishes, and a few hundred of the
// object store's 128 KB chunks, against the client's 4,000 unacknowledged ones.
const ObjectAhead = 64 << 20

// PutObject is store.Put with flow control. The object store publishes chunks as fast as it
// reads them, with up to 4,000 acks outstanding (512 MB of 128 KB chunks): when the server
// stores them more slowly (a busy disk, cores taken by sampling), a gigabyte-sized
// checkpoint failed with the stream's "429 too many requests" or the client's "stalled with
// too many outstanding async published messages", in two of three puts of 1 GB on an idle
// 2-core VM. PutObject reads r only while the bucket has stored all but ObjectAhead bytes of
// what it read, asking the server for the bucket's size about once per ObjectAhead/2 bytes.
func PutObject(ctx context.Context, store jetstream.ObjectStore, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	info, _, err := putObject(ctx, store, meta, r, ObjectAhead)
	return info, err
}

// putObject also returns the most it read ahead of the server.
func putObject(ctx context.Context, store jetstream.ObjectStore, meta jetstream.ObjectMeta, r io.Reader, ahead uint64) (*jetstream.ObjectInfo, uint64, error) {
	st, err := store.Status(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("object store status: %w", err)
	}
	pr := &pacedReader{ctx: ctx, r: r, store: store, base: st.Size(), ahead: ahead}
	info, err := store.Put(ctx, meta, pr)
	return info, pr.most, err
}

// pacedReader reads r for an object put, waiting while more than ahead bytes of it are not
// yet stored in the bucket (whose size grows by them, and starts at base).
type pacedReader struct {
	ctx   context.Context
	r     io.Reader
	store jetstream.ObjectStore
	base  uint64
	ahead uint64

	read, stored uint64 // bytes read; bytes the bucket has grown by, as last asked
	most         uint64 // the most read ahead of stored
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if uint64(len(b)) > p.ahead/2 {
		b = b[:p.ahead/2]
	}
	// Near the bound, wait until the server is within half of it: it is asked about once
	// per ahead/2 bytes when it keeps up.
	if p.read+uint64(len(b)) > p.stored+p.ahead {
		for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
			st, err := p.store.Status(p.ctx)
			if err != nil {
				return 0, fmt.Errorf("object store status: %w", err)
			}
			if size := st.Size(); size > p.base {
				p.stored = size - p.base
			}
			if p.read <= p.stored+p.ahead/2 {
				break
			}
			select {
			case <-p.ctx.Done():
				return 0, p.ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	n, err := p.r.Read(b)
	p.read += uint64(n)
	if p.read > p.stored {
		p.most = max(p.most, p.read-p.stored)
	}
	return n, err
}
