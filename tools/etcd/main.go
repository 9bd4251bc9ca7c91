// Command etcd is the upstream etcd server, unchanged: it only calls etcd's
// own entry point so that the pinned go.etcd.io/etcd/server/v3 module can be
// built from the Go module proxy. It has a module of its own so that etcd's
// dependency versions and those Kubernetes was released with (../go.mod) do
// not raise each other.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
