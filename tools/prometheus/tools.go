//go:build tools

// Prometheus for the lab's cluster tests, built from its upstream module:
// Debian's package leaves out Kubernetes service discovery, which the lab
// uses to find one agent per node through the API server. Built with only
// that discovery mechanism (`-tags remove_all_sd,enable_kubernetes_sd`).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
