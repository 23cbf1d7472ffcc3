package cache

import (
	"fmt"
	"testing"
)

func TestCacheBoundedAndKeepsRecent(t *testing.T) {
	c := New[int](100)
	hot := KeyOf("hot")
	c.Put(hot, 1)
	for i := 0; i < 10_000; i++ {
		c.Put(KeyOf(fmt.Sprint(i)), i)
		if i%10 == 0 {
			if _, ok := c.Get(hot); !ok {
				t.Fatalf("hot entry evicted at %d", i)
			}
		}
		if n := c.Len(); n > 100 {
			t.Fatalf("len %d > capacity 100", n)
		}
	}
	if _, ok := c.Get(KeyOf("0")); ok {
		t.Fatal("oldest cold entry still present")
	}
	c.Delete(hot)
	if _, ok := c.Get(hot); ok {
		t.Fatal("deleted entry present")
	}
}
