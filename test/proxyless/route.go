package proxyless

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// claimLocalRoute adds the local route of a /24 of 10.88.0.0/16 no one on this machine routes
// yet, and returns it: runners in parallel tests, or in two test runs on one machine, each
// need pod IPs of their own (a process binds its pod's IP:port; two on one address collide).
// A route another process added first makes the kernel refuse ours, so the claim is exclusive.
func claimLocalRoute() (string, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return "", fmt.Errorf("finding the loopback interface: %w", err)
	}
	start := rand.IntN(256)
	for i := range 256 {
		cidr := fmt.Sprintf("10.88.%d.0/24", (start+i)%256)
		_, dst, _ := net.ParseCIDR(cidr)
		err := netlink.RouteAdd(localRoute(lo, dst))
		switch {
		case err == nil:
			return cidr, nil
		case errors.Is(err, unix.EEXIST):
			continue
		case errors.Is(err, unix.EPERM):
			return "", routeDenied(cidr, err)
		default:
			return "", fmt.Errorf("adding the local route for %s: %w", cidr, err)
		}
	}
	return "", errors.New("every /24 of 10.88.0.0/16 is routed locally already: stop the test runs that hold them")
}

// routeDenied says what to do when this process may not add the pod range's route.
func routeDenied(cidr string, err error) error {
	return fmt.Errorf("the proxyless workloads need their pod range routed to this machine (`ip route add local %s dev lo`), and this process may not add routes: run the tests as root or with CAP_NET_ADMIN: %w", cidr, err)
}

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
			return false, routeDenied(cidr, err)
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
