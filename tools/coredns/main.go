// A CoreDNS with only the plugins the test DNS server uses: it serves the records
// external-dns's `coredns` provider writes into etcd (the `etcd` plugin), bound to
// one address (`bind`), logging each query (`log`, `errors`). Same coremain as the
// release binary, fewer plugins (the default set pulls in every cloud SDK).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/etcd"
	_ "github.com/coredns/coredns/plugin/log"
)

// In the order of CoreDNS's own core/dnsserver/zdirectives.go (order decides who sees a query first).
var directives = []string{"bind", "errors", "log", "etcd"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
