package check

import "testing"

func TestAcceptsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true,
		"TEXT/HTML":                            true,
		" application/xhtml+xml ; q=1":         true,
		"image/webp, */*;q=0.8":                true,
		"text/*":                               true,
		"application/json, text/plain, */*":    true,
		"application/json":                     false,
		"application/json, text/plain":         false,
		"text/htmlx":                           false,
		"":                                     false,
		",,;":                                  false,
		"application/json;text/html":           false, // a parameter, not a type
		"application/json,text/html;q=0.1,x/y": true,
	} {
		if got := acceptsHTML(accept); got != want {
			t.Errorf("acceptsHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}
