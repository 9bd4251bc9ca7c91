//go:build tools

// Package tools pins the upstream programs the lab runs (see README.md).
// The blank imports keep their modules in go.mod and go.sum; nothing here is
// compiled into anything: the programs are built with
// `go build k8s.io/kubernetes/cmd/<name>` from this directory.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"

	// Istio's CRDs are read from this module's directory
	// (kubernetes/customresourcedefinitions.gen.yaml); one of its Go
	// packages is imported so that `go mod tidy` keeps the pin.
	_ "istio.io/api/networking/v1alpha3"
)
