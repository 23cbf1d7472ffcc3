package main

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// load is one run of the HTTP/1.1 load generator: conns keep-alive
// connections, each with one request at a time (no pipelining), cycling
// through values of one header; every answer is read to its end and
// checked against want(i) for the value it was sent with.
//
// It works like wrk: two threads, each an epoll loop over its share of the
// connections, so the generator costs about what wrk costs per request and
// the servers get the CPU they would get with wrk (a goroutine per
// connection costs the generator more and leaves the servers idle while
// goroutines are woken).
type load struct {
	addr   string // host:port
	method string
	path   string
	host   string   // the Host header
	fixed  []string // further header lines, "Name: value"
	header string   // the header whose value cycles ("" for none)
	values []string
	want   func(i int) *expect
	conns  int
	dur    time.Duration // how long to send
	total  int           // or: stop after this many requests (each value once when = len(values))
}

// expect is what an answer must be: its status and header values (names in
// lower case; an empty value only requires the header to be present).
type expect struct {
	status  int
	headers []wantHeader
}

type wantHeader struct {
	name, value string
	prefix      bool // value is a prefix of the header's value
}

// outcome is what a run measured on the generator's side.
type outcome struct {
	requests int
	errors   int
	firstErr string
	elapsed  time.Duration
	lat      []uint32      // µs, sorted
	genCPU   time.Duration // the generator's own CPU (user+system)
}

func (o outcome) rps() float64 { return float64(o.requests) / o.elapsed.Seconds() }

func (o outcome) pct(p float64) float64 {
	if len(o.lat) == 0 {
		return 0
	}
	return float64(o.lat[min(len(o.lat)-1, int(float64(len(o.lat))*p))])
}

// tally gathers what the workers of one run measured.
type tally struct {
	mu    sync.Mutex
	out   outcome
	ru0   time.Duration
	start time.Time
}

// startTally starts the clock and the CPU count of a run.
func startTally() *tally { return &tally{ru0: rusage(), start: time.Now()} }

// add merges what one worker measured.
func (t *tally) add(lat []uint32, errs int, firstErr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.out.lat = append(t.out.lat, lat...)
	t.out.errors += errs
	if t.out.firstErr == "" {
		t.out.firstErr = firstErr
	}
}

// done stops the clock once every worker has been added.
func (t *tally) done() outcome {
	t.out.elapsed = time.Since(t.start)
	t.out.genCPU = rusage() - t.ru0
	t.out.requests = len(t.out.lat)
	slices.Sort(t.out.lat)
	return t.out
}

const workers = 2 // threads, as wrk -t2

// conn is one connection of a worker.
type conn struct {
	fd    int
	out   []byte // the request being sent
	sent  int
	in    []byte // what has arrived of the answer
	value int    // index of the value the request carries
	t0    time.Time
	// waiting: the request did not fit the socket buffer; EPOLLOUT is on.
	waiting bool
}

// run drives the load and returns what it measured.
func (l *load) run() outcome {
	var next atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	tl := startTally()
	if l.total == 0 {
		time.AfterFunc(l.dur, func() { stop.Store(true) })
	}
	for w := range workers {
		n := l.conns / workers
		if w < l.conns%workers {
			n++
		}
		wg.Go(func() { tl.add(l.worker(n, &next, &stop)) })
	}
	wg.Wait()
	return tl.done()
}

// worker runs one epoll loop over n connections until stop (or the total)
// and returns the latencies, the count of wrong answers and the first.
func (l *load) worker(n int, next *atomic.Int64, stop *atomic.Bool) (lat []uint32, errs int, firstErr string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fail := func(err error) {
		if errs == 0 {
			firstErr = err.Error()
		}
		errs++
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		fail(err)
		return
	}
	defer syscall.Close(ep)
	conns := map[int]*conn{}
	defer func() {
		for fd := range conns {
			syscall.Close(fd)
		}
	}()
	// send starts the next request on c; false when there is none to send.
	send := func(c *conn) bool {
		k := int(next.Add(1) - 1)
		if stop.Load() || (l.total > 0 && k >= l.total) {
			return false
		}
		c.value = k % max(len(l.values), 1)
		c.out, c.sent, c.in = l.request(c.out[:0], c.value), 0, c.in[:0]
		c.t0 = time.Now()
		if err := flush(ep, c); err != nil {
			fail(err)
			return false
		}
		return true
	}
	open := func() *conn {
		fd, err := dial(l.addr)
		if err != nil {
			fail(err)
			return nil
		}
		c := &conn{fd: fd, out: make([]byte, 0, 16<<10), in: make([]byte, 0, 32<<10)}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			syscall.Close(fd)
			fail(err)
			return nil
		}
		conns[fd] = c
		return c
	}
	closeConn := func(c *conn) {
		syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, c.fd, nil)
		syscall.Close(c.fd)
		delete(conns, c.fd)
	}
	active := 0
	for range n {
		if c := open(); c != nil && send(c) {
			active++
		}
	}
	lat = make([]uint32, 0, 1<<16)
	events := make([]syscall.EpollEvent, 64)
	buf := make([]byte, 64<<10)
	for active > 0 {
		k, err := syscall.EpollWait(ep, events, 100)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			fail(err)
			return
		}
		for _, ev := range events[:max(k, 0)] {
			c := conns[int(ev.Fd)]
			if c == nil {
				continue
			}
			if c.sent < len(c.out) {
				if err := flush(ep, c); err != nil {
					fail(err)
					closeConn(c)
					active--
				}
				continue
			}
			m, err := syscall.Read(c.fd, buf)
			if errors.Is(err, syscall.EAGAIN) {
				continue
			}
			if err != nil || m == 0 {
				if err == nil {
					err = errors.New("connection closed by the server")
				}
				fail(err)
				closeConn(c)
				if c = open(); c == nil || !send(c) {
					active--
				}
				continue
			}
			c.in = append(c.in, buf[:m]...)
			used, closing, err := parseAnswer(c.in, l.want(c.value))
			if used == 0 && err == nil {
				continue // not all of it yet
			}
			lat = append(lat, uint32(time.Since(c.t0)/time.Microsecond))
			if err != nil {
				fail(err)
			}
			if err != nil || closing {
				closeConn(c)
				if c = open(); c == nil {
					active--
					continue
				}
			}
			if !send(c) {
				active--
			}
		}
	}
	return lat, errs, firstErr
}

// flush writes what is left of c's request. On a full socket buffer (not
// seen with these small requests) it asks for EPOLLOUT and is called again
// on the next event of c.
func flush(ep int, c *conn) error {
	for c.sent < len(c.out) {
		m, err := syscall.Write(c.fd, c.out[c.sent:])
		if errors.Is(err, syscall.EAGAIN) {
			c.waiting = true
			return syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, c.fd, &syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT, Fd: int32(c.fd)})
		}
		if err != nil {
			return err
		}
		c.sent += m
	}
	if c.waiting {
		c.waiting = false
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, c.fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(c.fd)})
	}
	return nil
}

// dial connects a non-blocking TCP socket with TCP_NODELAY, as wrk does.
func dial(addr string) (int, error) {
	host, port, _ := cutLast(addr, ":")
	p, err := strconv.Atoi(port)
	if err != nil {
		return -1, err
	}
	var sa syscall.SockaddrInet4
	sa.Port = p
	var ip [4]byte
	if _, err := fmt.Sscanf(host, "%d.%d.%d.%d", &ip[0], &ip[1], &ip[2], &ip[3]); err != nil {
		return -1, fmt.Errorf("address %s: %w", addr, err)
	}
	sa.Addr = ip
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.Connect(fd, &sa); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	syscall.SetNonblock(fd, true)
	return fd, nil
}

func cutLast(s, sep string) (string, string, bool) {
	i := bytes.LastIndex([]byte(s), []byte(sep))
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func (l *load) request(b []byte, i int) []byte {
	b = append(b, l.method...)
	b = append(b, ' ')
	b = append(b, l.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, l.host...)
	b = append(b, "\r\n"...)
	for _, f := range l.fixed {
		b = append(b, f...)
		b = append(b, "\r\n"...)
	}
	if l.header != "" {
		b = append(b, l.header...)
		b = append(b, ": "...)
		b = append(b, l.values[i]...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

var errMalformed = errors.New("malformed answer")

// parseAnswer reads one HTTP/1.1 answer from the start of b and checks it
// against e. It returns the bytes the answer took (0 while incomplete) and
// whether the server closes the connection after it.
func parseAnswer(b []byte, e *expect) (used int, closing bool, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return 0, false, nil
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return len(b), true, fmt.Errorf("%w: status line %.80q", errMalformed, line)
	}
	status, _ := strconv.Atoi(string(line[9:12]))
	var found uint64 // bit j: e.headers[j] matched
	var mismatch string
	length, chunked := 0, false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return len(b), true, fmt.Errorf("%w: header line %.80q", errMalformed, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			length, _ = strconv.Atoi(string(value))
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
		for j, w := range e.headers {
			if !bytes.EqualFold(name, []byte(w.name)) {
				continue
			}
			if w.value == "" || string(value) == w.value || (w.prefix && bytes.HasPrefix(value, []byte(w.value))) {
				found |= 1 << j
			} else if mismatch == "" {
				mismatch = fmt.Sprintf("%s: %.80q, want %.80q", w.name, value, w.value)
			}
		}
	}
	body := end + 4
	if chunked {
		n, done := chunkedLength(b[body:])
		if !done {
			return 0, false, nil
		}
		used = body + n
	} else {
		if len(b) < body+length {
			return 0, false, nil
		}
		used = body + length
	}
	switch {
	case status != e.status:
		return used, closing, fmt.Errorf("status %d, want %d", status, e.status)
	case found != 1<<len(e.headers)-1:
		if mismatch == "" {
			for j, w := range e.headers {
				if found&(1<<j) == 0 {
					mismatch = w.name + " missing"
					break
				}
			}
		}
		return used, closing, fmt.Errorf("status %d: %s", status, mismatch)
	}
	return used, closing, nil
}

// chunkedLength is the length of a chunked body at the start of b, and
// whether all of it is there.
func chunkedLength(b []byte) (int, bool) {
	n := 0
	for {
		i := bytes.Index(b[n:], []byte("\r\n"))
		if i < 0 {
			return 0, false
		}
		sizeText, _, _ := bytes.Cut(b[n:n+i], []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sizeText)), 16, 64)
		if err != nil {
			return len(b), true // malformed: give up on the connection's framing
		}
		n += i + 2 + int(size) + 2
		if n > len(b) {
			return 0, false
		}
		if size == 0 {
			return n, true
		}
	}
}

// rusage is the CPU this process has used.
func rusage() time.Duration { return cpuOf(syscall.RUSAGE_SELF) }

// childCPU is the CPU its finished children have used (h2load).
func childCPU() time.Duration { return cpuOf(syscall.RUSAGE_CHILDREN) }

func cpuOf(who int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
