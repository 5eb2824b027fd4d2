// Package grpccheck proves that stsauth.PerRPCCredentials works with a real
// grpc client and server over loopback: the server verifies each call's
// token with package verify in an interceptor, the client's call fails at
// its own deadline while STS hangs, a token the server answers
// Unauthenticated to is replaced once, and the credentials refuse a
// connection without transport security unless told otherwise. It also
// checks that grpc's credentials/jwt reads a token file as stsproxy token
// --output-file writes it, and builds the README's gRPC programs. It is its
// own module so that grpc never becomes a dependency of stsauth:
//
//	cd hack/grpccheck && go test -race ./...
package grpccheck
