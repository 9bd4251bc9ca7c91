//go:build tools

// Package tools pins Helm, the package manager the chart in
// deploy/helm/meshdrift is tested with (see ../README.md). The blank import
// keeps helm.sh/helm/v4 in go.mod and go.sum; nothing here is compiled into
// anything: the program is built with `go build helm.sh/helm/v4/cmd/helm`
// from this directory. It is a module of its own because Helm v4.3.2 is
// built against k8s.io/client-go v0.37, newer than the v0.36.3 the
// Kubernetes release in ../go.mod pins: apart, neither raises the other.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
