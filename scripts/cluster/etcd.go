// etcd built from the Go module proxy: `go install` of go.etcd.io/etcd/server/v3 is refused
// because that module has replace lines, so scripts/cluster.sh builds this module instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
