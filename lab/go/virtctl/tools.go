//go:build tools

// Package tools pins the virtctl command so `go mod tidy` keeps its dependencies.
package tools

import _ "kubevirt.io/kubevirt/cmd/virtctl"
