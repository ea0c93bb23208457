package remote

import (
	"container/list"
	"sync"
)

// key names a page: a file of the Opener and the page's index in it.
type key struct {
	file int
	idx  int64
}

// fetchState is one request that fills one or more pages.
type fetchState struct {
	done chan struct{} // closed once err is set
	err  error
}

// page is one aligned piece of a file, fetched or being fetched.
type page struct {
	key  key
	data []byte
	f    *fetchState
	refs int           // readers copying from data (under cache.mu)
	elem *list.Element // in the LRU list once fetched; nil before and once evicted
}

// cache holds at most max fetched pages of size bytes (the last page of a
// file is shorter), least recently used first out. Pages being fetched are
// not counted and never evicted; pages whose fetch failed are forgotten,
// so that the next read tries again. Buffers of evicted pages are reused
// once no reader copies from them.
//
// A read shorter than span bytes that misses fetches the pages it covers
// and, when it continues what the cache holds (the page before it is
// there: a sequential pass), up to span bytes from there: metadata reads
// scattered over the file cost a page each, a pass of small reads in file
// order (compressed grains and clusters) costs one request per span.
// Reads of span bytes or more take the pages the cache holds and fetch the
// rest straight into the caller's buffer, without keeping it; while they
// run, no small read's look-ahead reaches into their bytes (they would
// cross the network twice: a pass's blocks in flight next to a short read
// of the data before them).
type cache struct {
	size int64 // page size
	span int64 // the most a small read fetches, and the threshold of a large read
	max  int

	mu   sync.Mutex
	m    map[key]*page
	lru  *list.List // of *page, most recent at the front
	free [][]byte
	// large are the ranges of the large reads under way.
	large map[*extent]struct{}
}

// extent is a range of bytes of a file, [from, to).
type extent struct {
	file     int
	from, to int64
}

func newCache(pageSize, span int64, max int) *cache {
	return &cache{size: pageSize, span: span, max: max, m: map[key]*page{}, lru: list.New(), large: map[*extent]struct{}{}}
}

// read fills p, which lies inside f, from the cache and the network.
func (c *cache) read(f *File, p []byte, off int64) error {
	if int64(len(p)) >= c.span {
		return c.readLarge(f, p, off)
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		idx := pos / c.size
		last := (off + int64(len(p)) - 1) / c.size
		pg, err := c.get(f, idx, last)
		if err != nil {
			return err
		}
		k := copy(p[done:], pg.data[pos-idx*c.size:])
		c.release(pg)
		done += k
	}
	return nil
}

// readLarge serves a read of span bytes or more: the pages the cache
// holds (or is fetching) are copied, the rest is fetched straight into p,
// one request per run of missing pages, and not kept.
func (c *cache) readLarge(f *File, p []byte, off int64) error {
	end := off + int64(len(p))
	// Told before the pages are looked at: a look-ahead that registers
	// its pages from now on stops short of these bytes, and one that did
	// before is found below and waited for.
	x := &extent{file: f.id, from: off, to: end}
	c.mu.Lock()
	c.large[x] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.large, x)
		c.mu.Unlock()
	}()
	gap := int64(-1) // start of the run of missing bytes, -1 for none
	flush := func(to int64) error {
		if gap < 0 {
			return nil
		}
		from := gap
		gap = -1
		return f.op.fetch(f, [][]byte{p[from-off : to-off]}, from)
	}
	for pos := off; pos < end; {
		idx := pos / c.size
		next := min((idx+1)*c.size, end)
		pg := c.peek(key{f.id, idx})
		if pg == nil {
			if gap < 0 {
				gap = pos
			}
			pos = next
			continue
		}
		if err := flush(pos); err != nil {
			c.release(pg)
			return err
		}
		<-pg.f.done
		if pg.f.err != nil {
			// Its fetch failed: fetch this piece ourselves.
			c.release(pg)
			gap = pos
			pos = next
			continue
		}
		copy(p[pos-off:next-off], pg.data[pos-idx*c.size:])
		f.op.c.hits.Add(1)
		c.release(pg)
		pos = next
	}
	return flush(end)
}

// peek returns page k, held, if the cache has it or is fetching it.
func (c *cache) peek(k key) *page {
	c.mu.Lock()
	defer c.mu.Unlock()
	pg := c.m[k]
	if pg == nil {
		return nil
	}
	pg.refs++
	if pg.elem != nil {
		c.lru.MoveToFront(pg.elem)
	}
	return pg
}

// get returns page idx of f, held (release it), fetching it if needed
// with the pages after it up to last (the read's last page), or up to a
// span when the page before idx is there.
func (c *cache) get(f *File, idx, last int64) (*page, error) {
	k := key{f.id, idx}
	c.mu.Lock()
	if pg := c.m[k]; pg != nil {
		pg.refs++
		if pg.elem != nil {
			c.lru.MoveToFront(pg.elem)
		}
		c.mu.Unlock()
		<-pg.f.done
		if pg.f.err != nil {
			c.release(pg)
			return nil, pg.f.err
		}
		f.op.c.hits.Add(1)
		return pg, nil
	}
	pages := (f.size + c.size - 1) / c.size
	end := last + 1
	if c.m[key{f.id, idx - 1}] != nil {
		end = max(end, idx+c.span/c.size)
	}
	end = min(end, pages)
	st := &fetchState{done: make(chan struct{})}
	var run []*page
	var bufs [][]byte
	for i := idx; i < end; i++ {
		if i > idx && c.m[key{f.id, i}] != nil {
			break // the cache has the rest from here
		}
		if i > last && c.inLarge(f.id, i*c.size, min((i+1)*c.size, f.size)) {
			break // a large read is fetching the rest
		}
		n := min(c.size, f.size-i*c.size)
		pg := &page{key: key{f.id, i}, f: st, data: c.buffer(n)}
		c.m[pg.key] = pg
		run = append(run, pg)
		bufs = append(bufs, pg.data)
	}
	first := run[0]
	first.refs++
	c.mu.Unlock()
	f.op.c.misses.Add(1)

	err := f.op.fetch(f, bufs, idx*c.size)
	c.mu.Lock()
	st.err = err
	for _, pg := range run {
		if err != nil {
			delete(c.m, pg.key)
			c.recycle(pg)
			continue
		}
		pg.elem = c.lru.PushFront(pg)
	}
	if err == nil {
		// The page asked for is the most recent.
		c.lru.MoveToFront(first.elem)
		c.evict()
	}
	close(st.done)
	c.mu.Unlock()
	if err != nil {
		c.release(first)
		return nil, err
	}
	return first, nil
}

// inLarge reports whether a large read under way covers any of [from,
// to) of file (under mu).
func (c *cache) inLarge(file int, from, to int64) bool {
	for x := range c.large {
		if x.file == file && x.from < to && from < x.to {
			return true
		}
	}
	return false
}

// put adds the first bytes of a file of size bytes, fetched with its
// open, as pages: whole pages only.
func (c *cache) put(file int, size int64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &fetchState{done: make(chan struct{})}
	close(st.done)
	for i := int64(0); i*c.size < int64(len(data)); i++ {
		k := key{file, i}
		if c.m[k] != nil {
			continue
		}
		n := min(c.size, size-i*c.size)
		if i*c.size+n > int64(len(data)) {
			break
		}
		pg := &page{key: k, f: st, data: c.buffer(n)}
		copy(pg.data, data[i*c.size:])
		c.m[k] = pg
		pg.elem = c.lru.PushFront(pg)
	}
	c.evict()
}

// release lets go of a page a reader held.
func (c *cache) release(pg *page) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pg.refs--
	c.recycle(pg)
}

// evict drops the least recently used pages beyond max (under mu).
func (c *cache) evict() {
	for c.lru.Len() > c.max {
		pg := c.lru.Remove(c.lru.Back()).(*page)
		pg.elem = nil
		delete(c.m, pg.key)
		c.recycle(pg)
	}
}

// recycle keeps the buffer of a page out of the cache that no reader
// holds (under mu).
func (c *cache) recycle(pg *page) {
	if pg.refs > 0 || pg.elem != nil || pg.data == nil || c.m[pg.key] == pg {
		return
	}
	if int64(cap(pg.data)) == c.size && len(c.free) < c.max {
		c.free = append(c.free, pg.data[:cap(pg.data)])
	}
	pg.data = nil
}

// buffer returns a buffer of n <= size bytes (under mu).
func (c *cache) buffer(n int64) []byte {
	if k := len(c.free); k > 0 {
		b := c.free[k-1]
		c.free = c.free[:k-1]
		return b[:n]
	}
	return make([]byte, c.size)[:n]
}

// drop forgets the pages of a closed file.
func (c *cache) drop(file int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, pg := range c.m {
		if k.file != file || pg.elem == nil {
			continue
		}
		c.lru.Remove(pg.elem)
		pg.elem = nil
		delete(c.m, k)
		c.recycle(pg)
	}
}
