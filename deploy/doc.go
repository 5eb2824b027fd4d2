// Package deploy holds no code: its tests prove that the container image
// built from the repository's Dockerfile, the Kubernetes manifests under
// kubernetes/ and the Helm chart under helm/ are what the README says they
// are, without a Docker daemon, a cluster or the helm command.
//
// It is its own module so that the container image, Kubernetes and Helm
// libraries its tests use stay out of the stsauth library's go.mod.
package deploy
