package upstream

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerShowsHeaders(t *testing.T) {
	h := Handler("")
	r := httptest.NewRequest("GET", "/x?format=json", nil)
	r.Header.Set("Kubeflow-Userid", "u@x")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var got struct{ Headers map[string][]string }
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Headers["kubeflow-userid"][0] != "u@x" {
		t.Fatalf("%v %s", err, w.Body)
	}
	r = httptest.NewRequest("GET", "/x", nil)
	r.Header.Set("Kubeflow-Userid", "<script>")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if !strings.Contains(w.Body.String(), `id="userid">&lt;script&gt;`) {
		t.Fatalf("html: %s", w.Body)
	}
}
