package revocation

// MaxOnce bounds the replay memory of a replica: one-time values (used
// login states, logout tokens' jti, refresh claims) remembered at once.
// Each costs about 120 bytes, so the memory stays under about 12 MB
// whatever arrives. Only values that were really used are remembered — a
// login state once the provider accepted its code, a jti once its logout
// token verified — so reaching it takes that many completed logins or
// provider-signed logout tokens within their lifetime (about 11 minutes),
// not anonymous requests.
const MaxOnce = 100_000

// once is the replay memory: keys, each remembered until its expiry, at
// most max at once. Expired keys are dropped as the memory is used, in
// order of expiry, from a heap: no scan of the whole memory, ever. When it
// is full, the key closest to its expiry is dropped early. Not safe for
// concurrent use (List guards it).
type once struct {
	max     int
	seen    map[string]int64 // key → expiry, unix seconds
	heap    []onceEntry      // the keys of seen, the earliest expiry first
	evicted int64            // keys dropped before their expiry because the memory was full
}

type onceEntry struct {
	exp int64
	key string
}

func newOnce(max int) *once { return &once{max: max, seen: map[string]int64{}} }

// has reports whether key is remembered and not expired at now.
func (o *once) has(key string, now int64) bool {
	exp, ok := o.seen[key]
	return ok && exp >= now
}

// add remembers key until exp, unless it is remembered already; it reports
// whether it was new. Expired keys go first; when the memory is full, the
// key closest to its expiry is dropped to make room.
func (o *once) add(key string, exp, now int64) bool {
	o.expire(now)
	if _, ok := o.seen[key]; ok {
		return false
	}
	for len(o.heap) >= o.max {
		o.pop()
		o.evicted++
	}
	o.seen[key] = exp
	o.push(onceEntry{exp, key})
	return true
}

// expire drops the keys whose expiry is before now.
func (o *once) expire(now int64) {
	for len(o.heap) > 0 && o.heap[0].exp < now {
		o.pop()
	}
}

func (o *once) len() int { return len(o.heap) }

func (o *once) push(e onceEntry) {
	o.heap = append(o.heap, e)
	i := len(o.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if o.heap[p].exp <= o.heap[i].exp {
			break
		}
		o.heap[p], o.heap[i] = o.heap[i], o.heap[p]
		i = p
	}
}

// pop drops the key with the earliest expiry.
func (o *once) pop() {
	n := len(o.heap) - 1
	delete(o.seen, o.heap[0].key)
	o.heap[0] = o.heap[n]
	o.heap[n] = onceEntry{}
	o.heap = o.heap[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && o.heap[l].exp < o.heap[m].exp {
			m = l
		}
		if r < n && o.heap[r].exp < o.heap[m].exp {
			m = r
		}
		if m == i {
			break
		}
		o.heap[m], o.heap[i] = o.heap[i], o.heap[m]
		i = m
	}
	// Give back the array's memory after a flood of keys has expired.
	if c := cap(o.heap); c > 1024 && n < c/4 {
		o.heap = append(make([]onceEntry, 0, c/2), o.heap...)
	}
}
