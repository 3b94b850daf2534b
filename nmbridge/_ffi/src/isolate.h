/* Taking an interface away from the host stack (emulated packet: ports). */
#ifndef NMB_ISOLATE_H
#define NMB_ISOLATE_H

/*
 * Drop every frame the interface receives before the kernel's protocols see
 * it (AF_PACKET still does). *link_fd_out holds the drop: close it to undo.
 * Returns 0 or -errno (EINVAL: the kernel has no tcx, Linux < 6.6).
 */
int nmb_isolate_ingress(int ifindex, int *link_fd_out);

#endif
