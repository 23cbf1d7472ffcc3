package grpccheck

import (
	"net/http"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec this one falls back to
	"google.golang.org/grpc/mem"
)

// Codec is the codec the gRPC server of the check must be built with
// (grpc.ForceServerCodecV2): a CheckRequest is read straight into the
// front's input (decode.go); every other message (the health service's,
// the answers) goes through grpc-go's proto codec, under its name.
func Codec() encoding.CodecV2 { return codec{encoding.GetCodecV2("proto")} }

type codec struct{ proto encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*input)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := in.decode(buf.ReadOnlyData()); err != nil {
		// Not protobuf: refused like any request the front cannot
		// translate (a definite 400, logged), not a gRPC error.
		in.refuse(http400, "the message is not a CheckRequest: %v", err)
		in.header = http.Header{}
	}
	return nil
}

func (codec) Name() string { return "proto" }
