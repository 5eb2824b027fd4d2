// Package deploy holds no code: its tests prove that the container image
// built from the repository's Dockerfile and the Kubernetes manifests under
// kubernetes/ are what the README says they are, without a Docker daemon or
// a cluster.
//
// It is its own module so that the container image and Kubernetes libraries
// its tests use stay out of the stsauth library's go.mod.
package deploy
