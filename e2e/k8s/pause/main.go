// Command pause is the sandbox container of the e2e tests' one-node Kubernetes:
// it holds a pod's namespaces open and exits on SIGTERM or SIGINT. Nothing can be
// pulled here, so containerd's sandbox image is built from this (see ../build and
// e2e/src/node.rs).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
