// Package keep makes `go mod tidy` keep what kube-scheduler, kube-controller-manager and kubectl
// need, so scripts/cluster.sh can build them from the same module as the apiserver.
package keep

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
)
