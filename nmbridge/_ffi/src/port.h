/*
 * A port: a netmap_if and the rings bound to it, and how to sync them.
 * Kernel ports sync through the netmap file descriptor; emulated ports
 * play the kernel's part themselves over a Linux socket or TAP device.
 * The engine and the loop see only rings.
 */
#ifndef NMB_PORT_H
#define NMB_PORT_H

#include <stdint.h>
#include <sys/socket.h>

#include "abi.h"
#include "offload.h"
#include "region.h"
#include "stats.h"

#define NMB_PORT_KERNEL 1
#define NMB_PORT_PACKET 2
#define NMB_PORT_TAP 3

#define NMB_BATCH 256

struct nmb_eport_ops; /* eport.h: what a kind of emulated port provides */

/* the kernel's side of an emulated ring */
struct nmb_kring {
	uint32_t hwcur;  /* RX: first slot not yet released; TX: next slot to transmit */
	uint32_t hwtail; /* RX: next slot to fill */
};

struct nmb_port {
	int kind;
	const struct nmb_eport_ops *ops; /* emulated ports: their kind's, set at open; NULL for kernel ports */
	int fd;                    /* polled by the loop for input (and output, unless txfd) */
	int txfd;                  /* packet ports: the socket that transmits, -1 if fd does */
	struct nmb_packet_rings *pk; /* packet ports: the socket rings */
	int ifindex;               /* emulated ports: the interface, to tell "gone" from "down" */
	int link_down;             /* set by the control plane; the loop keeps out of the kernel */
	struct netmap_if *nifp;
	struct nmb_region *region; /* emulated ports: the region their rings live in */
	uint32_t ntx, nrx;
	struct netmap_ring *tx[NMB_MAX_RINGS];
	struct netmap_ring *rx[NMB_MAX_RINGS];
	struct nmb_kring ktx[NMB_MAX_RINGS];
	struct nmb_kring krx[NMB_MAX_RINGS];
	uint32_t frags;            /* emulated ports: slots reserved per received frame */
	uint32_t max_frame;        /* the longest frame the interface sends (a NIC's: 0 if not known) */
	uint32_t stats_rx;         /* first stats record of its RX rings (set by the bridge) */
	uint32_t stats_tx;         /* first stats record of its TX rings */
	uint32_t pollerr_run;      /* consecutive POLLERR results */
	uint64_t pollerr_since_ms; /* when the first of them came */
	int rx_more;               /* emulated: the last rxsync left frames in the socket */
	uint64_t kernel_drops;     /* emulated: drops the socket reported, already counted */
	int err;                   /* the errno that made the port fail, 0 if none */
	struct mmsghdr *msgs;      /* emulated: NMB_BATCH messages */
	struct iovec *iovs;        /* emulated: NMB_BATCH * (frags + 1) */
	uint32_t hdr_len;          /* 0, or the virtio-net header in front of every frame on its rings */
	uint32_t offloads;         /* NMB_OFL_*: what its TX takes in those headers */
};

struct nmb_port *nmb_port_new(void);
void nmb_port_free(struct nmb_port *p); /* closes the fd */

/* bind every ring the netmap_if maps (ring_ofs != 0); returns 0 or -EINVAL */
int nmb_port_bind(struct nmb_port *p, struct netmap_if *nifp);

/* kernel ports */
int nmb_kport_open(struct nmb_port *p, const char *dev);
int nmb_kport_register(struct nmb_port *p, struct nmreq_header *hdr);
int nmb_kport_legacy_api(const char *dev, uint32_t *api_out);
int nmb_mmap_region(int fd, uint64_t size, void **base_out);
int nmb_munmap_region(void *base, uint64_t size);
int nmb_kport_txsync(struct nmb_port *p);
int nmb_kport_rxsync(struct nmb_port *p);

/* emulated ports */
int nmb_packet_open(struct nmb_port *p, int ifindex, uint32_t max_frame, int bufsize);
int nmb_tap_open(struct nmb_port *p, const char *name, uint32_t max_frame, int bring_up);
int nmb_eport_rxsync(struct nmb_port *p, struct nmb_ring_stats *rxs);
int nmb_eport_txsync(struct nmb_port *p, struct nmb_ring_stats *txs);
int nmb_eport_tx_pending(const struct nmb_port *p);
uint32_t nmb_eport_tx_discard(struct nmb_port *p, struct nmb_ring_stats *txs);
uint32_t nmb_eport_rx_discard(struct nmb_port *p, struct nmb_ring_stats *rxs, int may_enter);
int nmb_eport_rx_room(const struct nmb_port *p);
int nmb_eport_collect_drops(struct nmb_port *p, struct nmb_ring_stats *rxs);
int nmb_eport_recover(struct nmb_port *p); /* after POLLERR: 0, or -errno if the port is gone */
void nmb_eport_close(struct nmb_port *p);
int nmb_ifindex_exists(int ifindex); /* 0 only when the kernel says there is no such device */
int nmb_ctl_socket(void);            /* the descriptor it asks with (opened once), or -errno */

#endif
