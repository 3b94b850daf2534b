/*
 * Offloads: the virtio-net header that travels in front of a frame, what a
 * port's TX takes of it, and the software that does the rest (gso.c).
 *
 * A port with hdr_len > 0 carries, in front of every frame on its rings (a
 * single slot or an NS_MOREFRAG chain), a virtio-net header of hdr_len bytes
 * in the first slot: netmap's VALE convention (NETMAP_REQ_PORT_HDR_SET) and
 * QEMU's. Whoever sits on the far side of a port (a guest, a container)
 * chooses every byte of it: nothing here trusts a field before checking it.
 */
#ifndef NMB_OFFLOAD_H
#define NMB_OFFLOAD_H

#include <stdint.h>
#include <sys/uio.h>

#include "abi.h"

/* struct virtio_net_hdr (10 bytes; virtio 1.0 little-endian = host order here) */
struct nmb_vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;     /* a hint: the bytes of headers before the payload */
	uint16_t gso_size;    /* payload bytes per segment */
	uint16_t csum_start;  /* from the Ethernet header: where the sum starts */
	uint16_t csum_offset; /* from csum_start: where it goes */
};

#define NMB_VNET_HDR_LEN 10        /* struct virtio_net_hdr */
#define NMB_VNET_HDR_MRG_LEN 12    /* struct virtio_net_hdr_mrg_rxbuf (num_buffers after it) */

#define NMB_VNET_F_NEEDS_CSUM 1
#define NMB_VNET_F_DATA_VALID 2
#define NMB_VNET_GSO_NONE 0
#define NMB_VNET_GSO_TCPV4 1
#define NMB_VNET_GSO_UDP 3     /* UFO: IP fragmentation; not segmented here */
#define NMB_VNET_GSO_TCPV6 4
#define NMB_VNET_GSO_UDP_L4 5  /* USO: one UDP datagram per segment */
#define NMB_VNET_GSO_ECN 0x80

/* What a port's TX takes in the headers of the frames it is given (nmb_port.offloads). */
#define NMB_OFL_CSUM 0x1     /* NEEDS_CSUM: a checksum left to finish */
#define NMB_OFL_TSO4 0x2
#define NMB_OFL_TSO6 0x4
#define NMB_OFL_TSO_ECN 0x8
#define NMB_OFL_USO 0x10     /* GSO_UDP_L4, over IPv4 and IPv6 */
#define NMB_OFL_ALL 0x1f

/* the largest frame a super-frame may be: the IP length limit plus Ethernet and two tags */
#define NMB_GSO_MAX_FRAME (65535u + 14u + 8u)

/*
 * What the engine does between two ports whose frames differ (one carries
 * headers and the other not, or the TX side cannot take an offload the RX
 * side may bring). The loop sets nmb_rx_state.xlate on each RX ring of a
 * direction that needs one; NULL: the frames move untouched.
 */
struct nmb_xlate {
	uint32_t src_hdr;      /* header bytes in front of each frame on the RX ring */
	uint32_t dst_hdr;      /* header bytes to put in front of each frame on the TX ring */
	uint32_t dst_offloads; /* NMB_OFL_*: what the TX side takes */
	uint32_t check;        /* the RX side did not check its headers (a kernel port): check them */
	uint32_t dst_max_frame; /* the longest frame the TX side's interface sends, 0: not known */
};

/* A frame's bytes, from its Ethernet header on (no virtio-net header), scattered. */
struct nmb_frame_in {
	const struct iovec *iov;
	int niov;
	uint32_t len; /* the frame's bytes: no more than the iovs hold */
};

/* Where frames are written: consecutive slots of a TX ring, from head on. */
struct nmb_tx_out {
	struct netmap_ring *ring;
	uint32_t head;     /* the next slot to fill; advanced past what is written */
	uint32_t room;     /* free slots from head; reduced by what is written */
	uint32_t hdr_len;  /* bytes of virtio-net header, all zero, in front of each frame written */
	uint64_t bytes;    /* Ethernet bytes written (headers not counted), added to */
	uint32_t max_len;  /* the longest segment (Ethernet bytes) to write; 0: any */
};

/*
 * Whether header vh fits frame f: 0, or -1 if not (the frame is dropped and
 * counted as drop_header). The rules are at least the kernel's own
 * (virtio_net_hdr_to_skb and the GSO checks behind it), so that a frame passed
 * on with its header is never refused by the kernel behind a port (which
 * drops it without a word); and whatever passes is safe to segment.
 */
int nmb_vnet_check(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f);

/*
 * Segment super-frame f (vh checked, gso_type not NONE) as the kernel's own
 * software GSO would: each segment a whole Ethernet frame with every checksum
 * done, written to out (a chain where longer than a buffer), each behind
 * out->hdr_len zero bytes. Returns the segments written (out advanced), 0
 * when out->room is too small (nothing written; *need gets the slots it
 * needs), or -1 when f cannot be segmented, or its segments would be longer
 * than out->max_len (nothing written; drop_gso).
 */
int nmb_gso_segment(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f,
		    struct nmb_tx_out *out, uint32_t *need);

/*
 * Finish the checksum a sender left to the NIC in the frame of len bytes laid
 * over the slots of ring from first on (each full but the last): the ones'
 * complement sum from start to the end (the field at start + offset holds the
 * pseudo-header sum) stored there. 0, or -EINVAL if the offsets do not fit.
 */
int nmb_csum_finish(struct netmap_ring *ring, uint32_t first, uint32_t len, uint32_t start,
		    uint32_t offset);

#endif
