// Package reflection serves gRPC server reflection for feedgate with the
// proto files' comments, so `grpcurl describe` shows client developers the
// documentation written in proto/. protoc-gen-go strips comments from the
// descriptors it embeds; descriptors.binpb is a buf image of proto/ built
// with source info by .ci/generate (checked fresh by CI).
package reflection

import (
	_ "embed"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

//go:embed descriptors.binpb
var image []byte

// resolver finds descriptors in the commented image first, then in the
// program's registry (health and reflection themselves).
type resolver struct{ files *protoregistry.Files }

func (r resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.files.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.files.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// Handlers returns the v1 and v1alpha reflection handlers listing
// services (plus reflection itself), built with opts.
func Handlers(services []string, opts ...connect.HandlerOption) (map[string]http.Handler, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(image, &set); err != nil {
		return nil, fmt.Errorf("reflection image: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("reflection image: %w", err)
	}
	names := append(services, grpcreflect.ReflectV1ServiceName, grpcreflect.ReflectV1AlphaServiceName)
	r := grpcreflect.NewReflector(grpcreflect.NamerFunc(func() []string { return names }), grpcreflect.WithDescriptorResolver(resolver{files}))
	out := map[string]http.Handler{}
	p1, h1 := grpcreflect.NewHandlerV1(r, opts...)
	p2, h2 := grpcreflect.NewHandlerV1Alpha(r, opts...)
	out[p1], out[p2] = h1, h2
	return out, nil
}
