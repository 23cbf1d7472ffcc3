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

// An Authorization value with a comma is one credential when the comma
// separates auth-params; two credentials merged into one line (Envoy joins
// a repeated header with ",") are not.
func TestOneCredential(t *testing.T) {
	for v, want := range map[string]bool{
		`Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf", nc=00000001, qop=auth`: true,
		`Digest realm="a, Bearer b", nonce="x"`:      true, // a comma in a quoted string
		`Digest realm="a \", Bearer b", nonce = "x"`: true,
		`AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f7`: true,
		`Basic dTpw,Bearer eyJhbGciOi.e30.sig`:  false,
		`Basic dTpw, Bearer eyJhbGciOi.e30.sig`: false,
		`Basic dTpw,	Basic eA==`:                false,
		`Bearer eyJhbGciOi.e30.sig,Basic dTpw`:  false,
		`Bearer abc,def`:                        false, // a bearer token has no comma
		`bearer abc, def`:                       false,
		`Digest realm="x", Bearer `:             false,
		`Negotiate YII=,Negotiate YII=`:         false,
		`Custom a=b,c=d`:                        true,
		`Custom a=b, c = d`:                     true,
		`Custom a=b, ,`:                         true,
	} {
		if got := oneCredential(v); got != want {
			t.Errorf("oneCredential(%q) = %v, want %v", v, got, want)
		}
	}
}
