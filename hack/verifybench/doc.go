// Package verifybench compares package verify, with its token cache (the
// default) and without, with go-oidc's IDTokenVerifier on the same ststest
// tokens, warm keys, side by side in one run. It is its own module so that go-oidc never becomes a dependency of
// stsauth:
//
//	cd hack/verifybench && go test -run '^$' -bench . -benchmem -count 5
package verifybench
