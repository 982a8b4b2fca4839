// Package deploy holds what it takes to run cpvrefresh: the container image
// (Dockerfile), Kubernetes manifests with KEDA autoscaling (kubernetes/),
// an Azure Container Apps template (azure/main.bicep) and the local
// Azurite pin (azurite/).
//
// Its Go code renders the configuration reference, docs/configuration.md,
// from internal/config. Its tests decode every Kubernetes manifest strictly
// with the upstream API types and check that the manifests and the Bicep
// template agree with the daemons' configuration: variable names, required
// settings, probe paths and ports, the shutdown grace period and the queue
// the autoscaler watches.
package deploy

//go:generate go run ./gen -o ../docs/configuration.md
