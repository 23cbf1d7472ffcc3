package config

import (
	"fmt"
	"reflect"
	"strconv"
	"time"
)

// decode fills c from env: each field from the variable its env tag names,
// else its default. A variable set to the empty string (a params.env line
// "NAME=") is the empty text for a text variable (USERID_PREFIX=, AUDIENCES=
// mean no prefix, no audience) and the default for any other kind: an empty
// SESSION_HTTP_ONLY= or SERVER_PORT= must not silently mean false or 0. It
// reports every value that does not parse.
func decode(c *Config, env map[string]string) []error {
	var errs []error
	v := reflect.ValueOf(c).Elem()
	for _, f := range Fields() {
		field := v.FieldByIndex(f.index)
		raw, ok := env[f.Env]
		if !ok || (raw == "" && field.Kind() != reflect.String) {
			raw = f.Default
		}
		if err := set(field, raw); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %q: %v", ErrInvalid, f.Env, raw, err))
		}
	}
	return errs
}

// set parses raw into one field of a kind Config uses.
func set(f reflect.Value, raw string) error {
	if f.Type() == reflect.TypeOf(time.Duration(0)) {
		if raw == "" {
			f.SetInt(0)
			return nil
		}
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("not a duration (like 30s, 5m, 1h)")
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(raw)
	case reflect.Bool:
		if raw == "" {
			f.SetBool(false)
			return nil
		}
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not true or false")
		}
		f.SetBool(b)
	case reflect.Int:
		if raw == "" {
			f.SetInt(0)
			return nil
		}
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("not a whole number")
		}
		f.SetInt(int64(n))
	case reflect.Float64:
		if raw == "" {
			f.SetFloat(0)
			return nil
		}
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("not a number")
		}
		f.SetFloat(x)
	default:
		return fmt.Errorf("unsupported kind %s", f.Kind())
	}
	return nil
}
