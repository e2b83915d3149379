/**
 * rtnetlink through koffi: bridge, veth, addresses, routes, network namespaces; IPAM; NAT and published ports in berth's own nftables table; CNI plugin runner.
 *
 * @packageDocumentation
 */

export {};
