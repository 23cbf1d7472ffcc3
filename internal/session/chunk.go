package session

import (
	"strconv"
	"strings"
)

const (
	// chunkSize keeps each cookie (name, value and attributes) under the
	// 4096 bytes every browser accepts.
	chunkSize = 3800
	maxChunks = 8
)

// ChunkName is the cookie name of chunk i (0 is the plain name).
func ChunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + "_" + strconv.Itoa(i)
}

// CookieBytes is what one cookie of a session holds of the sealed value.
const CookieBytes = chunkSize

// MaxCookies is the most cookies a session may take (SESSION_MAX_COOKIES
// cannot raise it): 8 chunks, about 30 KB.
const MaxCookies = maxChunks

// Count is the number of cookies a sealed value takes, 0 when it is longer
// than MaxCookies can hold.
func Count(value string) int {
	n := max((len(value)+chunkSize-1)/chunkSize, 1)
	if n > maxChunks {
		return 0
	}
	return n
}

// Split cuts a sealed value into cookie values. A value that fits is one
// cookie, unchanged. It returns nil when the value needs more than the
// maximum number of chunks.
func Split(value string) []string {
	if len(value) <= chunkSize {
		return []string{value}
	}
	n := (len(value) + chunkSize - 1) / chunkSize
	if n > maxChunks {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		end := min((i+1)*chunkSize, len(value))
		out[i] = value[i*chunkSize : end]
	}
	out[0] = strconv.Itoa(n) + "." + out[0]
	return out
}

// Join reassembles a sealed value from the first chunk and a lookup for the
// others. It returns "" when the chunks are inconsistent.
func Join(first string, chunk func(i int) (string, bool)) string {
	count, rest, ok := strings.Cut(first, ".")
	if !ok {
		return first // single cookie: base64 has no '.'
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 2 || n > maxChunks || len(rest) != chunkSize {
		return ""
	}
	var b strings.Builder
	b.Grow(n * chunkSize)
	b.WriteString(rest)
	for i := 1; i < n; i++ {
		v, ok := chunk(i)
		if !ok || len(v) == 0 || len(v) > chunkSize || (i < n-1 && len(v) != chunkSize) {
			return ""
		}
		b.WriteString(v)
	}
	return b.String()
}
