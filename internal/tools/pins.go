//go:build tools

// Package tools pins module versions that the project uses before every
// importing package exists, so `go mod tidy` keeps them. It is never built.
package tools

import (
	_ "github.com/digitalocean/go-qemu/qmp"
	_ "github.com/google/nftables"
	_ "github.com/google/uuid"
	_ "github.com/kdomanski/iso9660"
	_ "github.com/labstack/echo/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/ssh"
	_ "k8s.io/apimachinery/pkg/api/resource"
	_ "libvirt.org/go/libvirt"
	_ "libvirt.org/go/libvirtxml"
	_ "sigs.k8s.io/yaml"
)
