package proxyless

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureLocalRoute makes every address of cidr local to this machine (`ip route add local CIDR
// dev lo`), so that a process can listen on a pod's IP and others reach it there. Loopback
// addresses cannot serve as pod IPs: kube-controller-manager leaves them out of EndpointSlices,
// so istiod would see no endpoints. It reports whether it added the route (the caller removes
// what it added), and fails with what to do when this process may not change routes.
func ensureLocalRoute(cidr string) (added bool, err error) {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		return false, fmt.Errorf("pod range %q: %w", cidr, err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return false, fmt.Errorf("finding the loopback interface: %w", err)
	}
	route := localRoute(lo, dst)
	existing, err := netlink.RouteListFiltered(netlink.FAMILY_V4, route, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return false, fmt.Errorf("listing the local routes: %w", err)
	}
	if len(existing) > 0 {
		return false, nil
	}
	if err := netlink.RouteAdd(route); err != nil {
		if errors.Is(err, unix.EPERM) {
			return false, fmt.Errorf("the proxyless workloads need the pod range %s routed to this machine (`ip route add local %s dev lo`), and this process may not add routes: run the tests as root or with CAP_NET_ADMIN, or add the route beforehand: %w", cidr, cidr, err)
		}
		return false, fmt.Errorf("adding the local route for %s: %w", cidr, err)
	}
	return true, nil
}

// removeLocalRoute removes a route ensureLocalRoute added.
func removeLocalRoute(cidr string) error {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.RouteDel(localRoute(lo, dst))
}

// localRoute is the route of the local table that makes dst's addresses this machine's own.
func localRoute(lo netlink.Link, dst *net.IPNet) *netlink.Route {
	return &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST}
}
