package authorizer

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

// FuzzAnswer: whatever an authorizer answers, an allow comes only from
// what the protocol says allows (arrikto: a 2xx; OPA: a 200 whose result is
// true or has "allow": true), and a refusal's reason is bounded and free of
// control characters.
func FuzzAnswer(f *testing.F) {
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, `{"result": true}`}, {200, `{"result": false}`}, {200, `{"result": {"allow": true, "reason": "x"}}`},
		{200, `{"result": {"allow": "true"}}`}, {200, `{}`}, {200, `{"result": null}`}, {200, `[true]`}, {403, "no\r\nway"},
		{401, ""}, {302, ""}, {500, "boom"}, {200, `{"result": true, "result": false}`}, {200, `{"result":{"allow":true,"allow":false}}`},
	} {
		f.Add(s.status, s.body)
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		for _, opa := range []bool{false, true} {
			var d Decision
			var err error
			if opa {
				d, err = opaDecision(status, []byte(body))
			} else {
				d, err = arriktoDecision(status, []byte(body))
			}
			if err != nil && d.Allowed {
				t.Fatalf("an error that allows: %d %q", status, body)
			}
			if d.Allowed {
				switch {
				case !opa && (status < 200 || status > 299):
					t.Fatalf("arrikto: HTTP %d allowed", status)
				case opa && (status != 200 || !opaAllows(body)):
					t.Fatalf("OPA: HTTP %d %q allowed", status, body)
				}
			}
			if len(d.Reason) > MaxReason+len("…") || strings.IndexFunc(d.Reason, unicode.IsControl) >= 0 {
				t.Fatalf("reason %q", d.Reason)
			}
		}
	})
}

// opaAllows is an independent reading of an allowing OPA answer.
func opaAllows(body string) bool {
	var doc struct {
		Result any `json:"result"`
	}
	if json.Unmarshal([]byte(body), &doc) != nil {
		return false
	}
	switch r := doc.Result.(type) {
	case bool:
		return r
	case map[string]any:
		return r["allow"] == true
	}
	return false
}
