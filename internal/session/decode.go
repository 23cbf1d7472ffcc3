package session

import (
	"encoding/json"
	"strconv"
)

// decodeSession reads a sealed session's JSON into s. Every check with a
// cookie this replica has not verified yet (more users than the cache
// holds, a restart) decodes one, and encoding/json's reflection was the
// largest part of that; so the JSON json.Marshal writes for a Session —
// the known keys, ASCII strings without escapes, integers, a list of
// strings — is read here directly, with every string a substring of one
// copy of the input (one allocation instead of one per string, and fewer
// objects for the garbage collector to trace in the cache). Anything else
// (an escape, a non-ASCII byte, an unknown key, another shape) is read by
// encoding/json, so the result is always what json.Unmarshal gives
// (decode_test.go holds it to that).
func decodeSession(b []byte, s *Session) error {
	if fastSession(b, s) {
		return nil
	}
	*s = Session{}
	return json.Unmarshal(b, s)
}

// fastSession is decodeSession's direct reading; false: use encoding/json
// (s may then be partly written).
func fastSession(b []byte, s *Session) bool {
	text := string(b) // the one copy every string points into
	d := sessionDecoder{text: text}
	d.space()
	if !d.take('{') {
		return false
	}
	d.space()
	if d.take('}') {
		return d.end()
	}
	for {
		d.space()
		key, ok := d.str()
		if !ok {
			return false
		}
		d.space()
		if !d.take(':') {
			return false
		}
		d.space()
		if !d.field(key, s) {
			return false
		}
		d.space()
		if d.take(',') {
			continue
		}
		if !d.take('}') {
			return false
		}
		return d.end()
	}
}

type sessionDecoder struct {
	text string
	i    int
}

func (d *sessionDecoder) space() {
	for d.i < len(d.text) {
		switch d.text[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *sessionDecoder) take(c byte) bool {
	if d.i < len(d.text) && d.text[d.i] == c {
		d.i++
		return true
	}
	return false
}

// end reports whether only white space follows.
func (d *sessionDecoder) end() bool {
	d.space()
	return d.i == len(d.text)
}

// str reads a string of printable ASCII without escapes.
func (d *sessionDecoder) str() (string, bool) {
	if !d.take('"') {
		return "", false
	}
	start := d.i
	for d.i < len(d.text) {
		c := d.text[d.i]
		switch {
		case c == '"':
			d.i++
			return d.text[start : d.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return "", false
		}
		d.i++
	}
	return "", false
}

// integer reads an integer json.Unmarshal puts in an int64.
func (d *sessionDecoder) integer() (int64, bool) {
	start := d.i
	if d.i < len(d.text) && d.text[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.text) && d.text[d.i] >= '0' && d.text[d.i] <= '9' {
		d.i++
	}
	if d.i == digits || d.i < len(d.text) && (d.text[d.i] == '.' || d.text[d.i] == 'e' || d.text[d.i] == 'E') {
		return 0, false
	}
	n, err := strconv.ParseInt(d.text[start:d.i], 10, 64)
	return n, err == nil && (d.text[digits] != '0' || d.i == digits+1)
}

// strings reads a list of strings, or null.
func (d *sessionDecoder) strings() ([]string, bool) {
	if d.null() {
		return nil, true
	}
	if !d.take('[') {
		return nil, false
	}
	out := make([]string, 0, 4)
	d.space()
	if d.take(']') {
		return out, true
	}
	for {
		d.space()
		v, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		d.space()
		if d.take(']') {
			return out, true
		}
		if !d.take(',') {
			return nil, false
		}
	}
}

func (d *sessionDecoder) null() bool {
	if len(d.text)-d.i >= 4 && d.text[d.i:d.i+4] == "null" {
		d.i += 4
		return true
	}
	return false
}

// field reads the value of key into s; false for an unknown key or a value
// of another shape (null included, except for the list, whose null
// json.Unmarshal reads as nil).
func (d *sessionDecoder) field(key string, s *Session) bool {
	var str *string
	var num *int64
	switch key {
	case "id":
		str = &s.ID
	case "sub":
		str = &s.Subject
	case "iss":
		str = &s.Issuer
	case "u":
		str = &s.User
	case "sid":
		str = &s.SID
	case "at":
		str = &s.AccessToken
	case "rt":
		str = &s.RefreshToken
	case "it":
		str = &s.IDToken
	case "e":
		str = &s.Email
	case "gp":
		str = &s.GroupsPolicy
	case "c":
		num = &s.Created
	case "x":
		num = &s.Expires
	case "a":
		num = &s.Active
	case "r":
		num = &s.Renewed
	case "tx":
		num = &s.TokenExpiry
	case "ix":
		num = &s.IDTokenExpiry
	case "g":
		g, ok := d.strings()
		s.Groups = g
		return ok
	default:
		return false
	}
	var ok bool
	if str != nil {
		*str, ok = d.str()
	} else {
		*num, ok = d.integer()
	}
	return ok
}
