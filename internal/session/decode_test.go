package session

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// sessionSeeds are sessions as json.Marshal writes them, and JSON that
// json.Unmarshal reads differently from what the direct reading knows.
var sessionSeeds = []string{
	`{"id":"i","sub":"s","u":"user@example.com","g":["team-a","team-b"],"c":1,"x":2}` + "\n",
	`{"id":"i","sub":"s","iss":"https://idp","u":"u","sid":"x","c":-1,"x":9223372036854775807,"a":3,"r":4,"at":"a","rt":"r","it":"t","tx":5,"ix":6,"e":"e@x"}`,
	`{"u":"\u003cb\u003e","g":["a\"b","\u2028"],"x":1}`,
	`{"u":"é","x":1}`, `{"U":"case","x":1}`, `{"u":"a","u":"b","g":["x"],"g":null}`, `{"g":[],"x":01}`,
	`{"x":1.5}`, `{"x":1e3}`, `{"x":99999999999999999999}`, `{"u":null,"x":-0}`, `{"extra":{"a":[1]},"u":"v"}`,
	`{}`, ` { "u" : "a" , "g" : [ "b" , "c" ] } `, `{"u":"a"} x`, `[]`, `{"u":"a",}`, `{"g":["a",]}`, ``, `{"u":"a`,
}

// The direct reading gives what json.Unmarshal gives, error or not.
func TestDecodeSessionIsJSONs(t *testing.T) {
	for _, in := range sessionSeeds {
		checkDecode(t, []byte(in))
	}
	// What json.Marshal writes for sessions of every shape.
	for _, s := range []Session{{}, {ID: "a", Groups: []string{}}, {User: "x<y>&z", Groups: []string{"g\u00e9", "h"}, Expires: -5},
		{ID: strings.Repeat("i", 3000), AccessToken: "a.b.c", IDTokenExpiry: 1 << 40}} {
		b, _ := json.Marshal(s)
		checkDecode(t, append(b, '\n'))
	}
}

func checkDecode(t testing.TB, b []byte) {
	t.Helper()
	var want, got Session
	wantErr := json.Unmarshal(b, &want)
	gotErr := decodeSession(b, &got)
	if (wantErr == nil) != (gotErr == nil) || wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v (%v)\nwant %+v (%v)", b, got, gotErr, want, wantErr)
	}
}

func FuzzDecodeSession(f *testing.F) {
	for _, s := range sessionSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) { checkDecode(t, []byte(in)) })
}

func BenchmarkDecodeSession(b *testing.B) {
	in, _ := json.Marshal(Session{ID: "bench-12345", Subject: "12345", User: "user12345@example.com", Groups: []string{"team-a", "team-b"},
		Created: 1796445268, Expires: 1796531668})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var s Session
			decodeSession(in, &s)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var s Session
			json.Unmarshal(in, &s)
		}
	})
}
