package config

import (
	"errors"
	"strings"
	"testing"
)

// GRPC_PORT: 9000 by default (also when set empty, as a params.env line
// "GRPC_PORT=" does), 0 turns the gRPC check off, and a value that is no
// port or a port another server already has is refused, naming it.
func TestGRPCPort(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want int
	}{
		{nil, 9000},
		{map[string]string{"GRPC_PORT": "0"}, 0},
		{map[string]string{"GRPC_PORT": "9100"}, 9100},
	} {
		s, err := Load(FromMap(setenv(t, c.env)))
		if err != nil {
			t.Fatalf("%v: %v", c.env, err)
		}
		if s.Servers.GRPCPort != c.want {
			t.Errorf("%v: GRPC_PORT %d, want %d", c.env, s.Servers.GRPCPort, c.want)
		}
	}
	env := setenv(t, nil)
	env["GRPC_PORT"] = ""
	if s, err := Load(FromMap(env)); err != nil || s.Servers.GRPCPort != 9000 {
		t.Errorf("GRPC_PORT= : port %v, err %v; want the default 9000", s, err)
	}
	for _, bad := range []map[string]string{
		{"GRPC_PORT": "-1"}, {"GRPC_PORT": "65536"}, {"GRPC_PORT": "grpc"},
		{"GRPC_PORT": "8080"}, {"GRPC_PORT": "8081"}, {"GRPC_PORT": "9100", "WEB_SERVER_PORT": "9100"},
	} {
		_, err := Load(FromMap(setenv(t, bad)))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "GRPC_PORT") {
			t.Errorf("%v: err = %v, want one naming GRPC_PORT", bad, err)
		}
	}
}
