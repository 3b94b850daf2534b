/*
 * The netmap kernel ABI (API 14), declared by nmbridge from the documented
 * facts (sizes and offsets are asserted by tests/ffi/test_abi.py).
 * User space owns the slots of a ring from head up to, not including, tail.
 */
#ifndef NMB_ABI_H
#define NMB_ABI_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/types.h>

#define NETMAP_API 14
#define NETMAP_MIN_API 14
#define NETMAP_MAX_API 15
#define NM_IFNAMSIZ 16
#define NETMAP_REQ_IFNAMSIZ 64
#define NM_CACHE_ALIGN 128
#define NETMAP_MAX_FRAGS 64

/* request types */
#define NETMAP_REQ_REGISTER 1
#define NETMAP_REQ_PORT_INFO_GET 2
#define NETMAP_REQ_VALE_ATTACH 3
#define NETMAP_REQ_PORT_HDR_SET 6  /* VALE ports only: 0, 10 or 12 (struct nmreq_port_hdr) */
#define NETMAP_REQ_PORT_HDR_GET 7
#define NETMAP_REQ_VALE_NEWIF 8
#define NETMAP_REQ_POOLS_INFO_GET 12

/* request options */
#define NETMAP_REQ_OPT_EXTMEM 1
#define NETMAP_REQ_OPT_OFFSETS 5

/* register modes (nr_mode) */
#define NR_REG_DEFAULT 0
#define NR_REG_ALL_NIC 1
#define NR_REG_SW 2
#define NR_REG_NIC_SW 3
#define NR_REG_ONE_NIC 4
#define NR_REG_PIPE_MASTER 5
#define NR_REG_PIPE_SLAVE 6
#define NR_REG_NULL 7
#define NR_REG_ONE_SW 8

/* register flags (nr_flags) */
#define NR_MONITOR_TX 0x100
#define NR_MONITOR_RX 0x200
#define NR_ZCOPY_MON 0x400
#define NR_EXCLUSIVE 0x800
#define NR_RX_RINGS_ONLY 0x2000
#define NR_TX_RINGS_ONLY 0x4000
#define NR_ACCEPT_VNET_HDR 0x8000
#define NR_DO_RX_POLL 0x10000
#define NR_NO_TX_POLL 0x20000

/* slot flags */
#define NS_BUF_CHANGED 0x0001
#define NS_REPORT 0x0002
#define NS_FORWARD 0x0004
#define NS_NO_LEARN 0x0008
#define NS_INDIRECT 0x0010
#define NS_MOREFRAG 0x0020

/* ring flags */
#define NR_TIMESTAMP 0x0002
#define NR_FORWARD 0x0004

/* netmap_if flags */
#define NI_PRIV_MEM 0x1

struct netmap_slot {
	uint32_t buf_idx;
	uint16_t len;
	uint16_t flags;
	uint64_t ptr;
};

struct netmap_ring {
	int64_t buf_ofs;          /* buffers start at (char *)ring + buf_ofs */
	uint32_t num_slots;
	uint32_t nr_buf_size;
	uint16_t ringid;
	uint16_t dir;             /* 1 for TX rings, 0 for RX rings (measured) */
	uint32_t head;            /* first slot owned by user space */
	uint32_t cur;             /* wakeup point */
	uint32_t tail;            /* first slot owned by the kernel */
	uint32_t flags;
	struct timeval ts;
	uint64_t offset_mask;
	uint64_t buf_align;
	char sem[128] __attribute__((__aligned__(NM_CACHE_ALIGN)));
	struct netmap_slot slot[];
};

struct netmap_if {
	char ni_name[NM_IFNAMSIZ];
	uint32_t ni_version;
	uint32_t ni_flags;
	uint32_t ni_tx_rings;
	uint32_t ni_rx_rings;
	uint32_t ni_bufs_head;
	uint32_t ni_host_tx_rings;
	uint32_t ni_host_rx_rings;
	uint32_t ni_spare1[3];
	/* offsets from this netmap_if: NIC TX, host TX, NIC RX, host RX */
	ssize_t ring_ofs[];
};

struct nmreq_header {
	uint16_t nr_version;
	uint16_t nr_reqtype;
	uint32_t nr_reserved;
	char nr_name[NETMAP_REQ_IFNAMSIZ];
	uint64_t nr_options;      /* pointer to the first struct nmreq_option */
	uint64_t nr_body;         /* pointer to the request body */
};

struct nmreq_register {
	uint64_t nr_offset;
	uint64_t nr_memsize;
	uint32_t nr_tx_slots;
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_host_tx_rings;
	uint16_t nr_host_rx_rings;
	uint16_t nr_mem_id;
	uint16_t nr_ringid;
	uint32_t nr_mode;
	uint32_t nr_extra_bufs;
	uint64_t nr_flags;
};

struct nmreq_option {
	uint64_t nro_next;
	uint32_t nro_reqtype;
	uint32_t nro_status;
	uint64_t nro_size;
};

struct nmreq_pools_info {
	uint64_t nr_memsize;
	uint16_t nr_mem_id;
	uint16_t pad1[3];
	uint64_t nr_if_pool_offset;
	uint32_t nr_if_pool_objtotal;
	uint32_t nr_if_pool_objsize;
	uint64_t nr_ring_pool_offset;
	uint32_t nr_ring_pool_objtotal;
	uint32_t nr_ring_pool_objsize;
	uint64_t nr_buf_pool_offset;
	uint32_t nr_buf_pool_objtotal;
	uint32_t nr_buf_pool_objsize;
};

/* NETMAP_REQ_OPT_EXTMEM: the region lives in memory user space provides */
struct nmreq_opt_extmem {
	struct nmreq_option nro_opt;
	uint64_t nro_usrptr;
	struct nmreq_pools_info nro_info;
};

/* NETMAP_REQ_OPT_OFFSETS: frames start at an offset inside their buffers */
struct nmreq_opt_offsets {
	struct nmreq_option nro_opt;
	uint64_t nro_max_offset;
	uint64_t nro_initial_offset;
	uint32_t nro_offset_bits;
	uint32_t nro_tx_align;
	uint64_t nro_min_gap;
};

struct nmreq_port_info_get {
	uint64_t nr_memsize;
	uint32_t nr_tx_slots;
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_host_tx_rings;
	uint16_t nr_host_rx_rings;
	uint16_t nr_mem_id;
	uint16_t pad1[3];
};

/*
 * NETMAP_REQ_PORT_HDR_SET / _GET: the length of the virtio-net header in front
 * of every frame on the rings of the port hdr.nr_name. Any control fd, bound or
 * not; SET only names an existing VALE port (the register creates it).
 */
struct nmreq_port_hdr {
	uint32_t nr_hdr_len;
	uint32_t pad1;
};

/* The legacy request (API < 14), served through NIOCREGIF. */
struct nmreq {
	char nr_name[NM_IFNAMSIZ];
	uint32_t nr_version;
	uint32_t nr_offset;
	uint32_t nr_memsize;
	uint32_t nr_tx_slots;
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_ringid;
	uint16_t nr_cmd;
	uint16_t nr_arg1;
	uint16_t nr_arg2;
	uint32_t nr_arg3;
	uint32_t nr_flags;
	uint32_t spare2[1];
};

/* legacy nr_ringid bits and nr_flags values */
#define NETMAP_HW_RING 0x4000
#define NETMAP_SW_RING 0x2000
#define NETMAP_RING_MASK 0x0fff
#define NETMAP_NO_TX_POLL 0x1000

#define NIOCGINFO _IOWR('i', 145, struct nmreq)
#define NIOCREGIF _IOWR('i', 146, struct nmreq)
#define NIOCTXSYNC _IO('i', 148)
#define NIOCRXSYNC _IO('i', 149)
#define NIOCCTRL _IOWR('i', 151, struct nmreq_header)

/* ring and slot helpers, as netmap_user.h defines them, written anew */
static inline struct netmap_ring *nmb_if_ring(struct netmap_if *nifp, uint32_t index)
{
	if (nifp->ring_ofs[index] == 0)
		return 0;
	return (struct netmap_ring *)((char *)nifp + nifp->ring_ofs[index]);
}

static inline char *nmb_slot_buf(const struct netmap_ring *ring, uint32_t buf_idx)
{
	return (char *)ring + ring->buf_ofs + (uint64_t)buf_idx * ring->nr_buf_size;
}

static inline uint32_t nmb_ring_next(const struct netmap_ring *ring, uint32_t i)
{
	return i + 1 == ring->num_slots ? 0 : i + 1;
}

/* slots between a and b, going forward (a == b: none) */
static inline uint32_t nmb_ring_dist(const struct netmap_ring *ring, uint32_t a, uint32_t b)
{
	return b >= a ? b - a : b + ring->num_slots - a;
}

/* slots user space owns: [head, tail) */
static inline uint32_t nmb_ring_space(const struct netmap_ring *ring)
{
	return nmb_ring_dist(ring, ring->head, ring->tail);
}

#endif
