package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Field describes one environment variable of Config.
type Field struct {
	Env     string
	Default string
	Desc    string
	Secret  bool
	index   int
}

// Fields lists every variable of Config in declaration order. It is the one
// source of --help and of the configuration reference in docs/.
func Fields() []Field {
	t := reflect.TypeOf(Config{})
	out := make([]Field, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		out = append(out, Field{
			Env:     f.Tag.Get("envconfig"),
			Default: f.Tag.Get("default"),
			Desc:    f.Tag.Get("desc"),
			Secret:  f.Tag.Get("secret") == "true",
			index:   i,
		})
	}
	return out
}

// Redacted returns the effective configuration as variable → value, with
// every secret replaced by "[redacted]" (or "" when unset). It is what the
// start-up log prints.
func (s *Settings) Redacted() map[string]string {
	v := reflect.ValueOf(s.Config)
	out := make(map[string]string)
	for _, f := range Fields() {
		val := fmt.Sprint(v.Field(f.index).Interface())
		if f.Secret && val != "" {
			val = "[redacted]"
		}
		out[f.Env] = val
	}
	return out
}

// String never shows secrets, so a Settings printed by mistake leaks nothing.
func (s *Settings) String() string {
	var b strings.Builder
	for _, f := range Fields() {
		fmt.Fprintf(&b, "%s=%s\n", f.Env, s.Redacted()[f.Env])
	}
	return b.String()
}

// Markdown renders the configuration reference table.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| Variable | Default | Meaning |\n|---|---|---|\n")
	for _, f := range Fields() {
		d := f.Default
		if d == "" {
			d = "—"
		} else {
			d = "`" + d + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Env, d, strings.ReplaceAll(f.Desc, "|", "\\|"))
	}
	return b.String()
}

// Usage renders the variables for --help.
func Usage() string {
	var b strings.Builder
	for _, f := range Fields() {
		fmt.Fprintf(&b, "  %s", f.Env)
		if f.Default != "" {
			fmt.Fprintf(&b, " (default %q)", f.Default)
		}
		fmt.Fprintf(&b, "\n      %s\n", f.Desc)
	}
	return b.String()
}
