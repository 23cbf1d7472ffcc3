// Package cache owns the bounded in-memory caches of the hot path: verified
// session cookies and verified bearer tokens. Keys are SHA-256 digests of the
// credential, never the credential itself, and every cache has a fixed
// capacity, so a flood of distinct values cannot grow memory without limit.
package cache

import (
	"crypto/sha256"
	"sync"
	"unsafe"
)

// Key is the digest a credential is cached under.
type Key [sha256.Size]byte

// KeyOf digests a credential. It reads the string in place: credentials run
// to kilobytes, and copying one per request would be the check's largest
// allocation. sha256 neither keeps nor modifies its input.
func KeyOf(credential string) Key {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(credential), len(credential)))
}

// Cache is a fixed-capacity map with two generations: entries live in the
// young generation; when it is full it becomes the old one and the previous
// old generation is dropped. A hit in the old generation moves the entry
// back to the young one. This approximates LRU at the cost of one map
// operation and no per-entry bookkeeping. Safe for concurrent use.
type Cache[V any] struct {
	mu       sync.Mutex // guards young and old
	young    map[Key]V
	old      map[Key]V
	capacity int // of each generation
}

// New returns a cache that holds at most capacity entries (at least 2).
func New[V any](capacity int) *Cache[V] {
	half := max(capacity/2, 1)
	return &Cache[V]{young: make(map[Key]V, half), old: map[Key]V{}, capacity: half}
}

// Get returns the value stored under k.
func (c *Cache[V]) Get(k Key) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.young[k]; ok {
		return v, true
	}
	v, ok := c.old[k]
	if ok {
		delete(c.old, k)
		c.putLocked(k, v)
	}
	return v, ok
}

// Put stores v under k.
func (c *Cache[V]) Put(k Key, v V) {
	c.mu.Lock()
	c.putLocked(k, v)
	c.mu.Unlock()
}

// Delete removes k.
func (c *Cache[V]) Delete(k Key) {
	c.mu.Lock()
	delete(c.young, k)
	delete(c.old, k)
	c.mu.Unlock()
}

// Len reports how many entries are held.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.young) + len(c.old)
}

func (c *Cache[V]) putLocked(k Key, v V) {
	if _, ok := c.young[k]; !ok && len(c.young) >= c.capacity {
		c.old = c.young
		c.young = make(map[Key]V, c.capacity)
	}
	c.young[k] = v
}
