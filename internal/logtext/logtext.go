// Package logtext bounds the untrusted text (claims, headers, provider error
// descriptions, key ids) that goes into log lines and pages, so a hostile
// value cannot bloat them, and the number of lines hostile requests can
// cause (Limited). Credentials never go there at all.
package logtext

// Bound returns s cut to at most n bytes.
func Bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
