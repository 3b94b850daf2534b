/*
 * The netmap ABI as Python sees it. The layouts are src/abi.h's alone: each
 * struct here is partial ("...;"), so cffi (API mode) takes every size, offset
 * and alignment from the compiler, and names only the fields Python reads or
 * writes. tests/ffi/test_abi.py checks every documented field through ffi, so
 * the documented fields of the kernel structs stay named; padding (pad1) and
 * the flexible slot[] are not (nmb_ring_slots gives the slots).
 */
#define NETMAP_API ...
#define NETMAP_MIN_API ...
#define NETMAP_MAX_API ...
#define NM_IFNAMSIZ ...
#define NETMAP_REQ_IFNAMSIZ ...
#define NM_CACHE_ALIGN ...
#define NETMAP_MAX_FRAGS ...
#define NETMAP_REQ_REGISTER ...
#define NETMAP_REQ_PORT_INFO_GET ...
#define NETMAP_REQ_VALE_ATTACH ...
#define NETMAP_REQ_PORT_HDR_SET ...
#define NETMAP_REQ_PORT_HDR_GET ...
#define NETMAP_REQ_VALE_NEWIF ...
#define NETMAP_REQ_POOLS_INFO_GET ...
#define NETMAP_REQ_OPT_EXTMEM ...
#define NETMAP_REQ_OPT_OFFSETS ...
#define NR_REG_DEFAULT ...
#define NR_REG_ALL_NIC ...
#define NR_REG_SW ...
#define NR_REG_NIC_SW ...
#define NR_REG_ONE_NIC ...
#define NR_REG_PIPE_MASTER ...
#define NR_REG_PIPE_SLAVE ...
#define NR_REG_NULL ...
#define NR_REG_ONE_SW ...
#define NR_MONITOR_TX ...
#define NR_MONITOR_RX ...
#define NR_ZCOPY_MON ...
#define NR_EXCLUSIVE ...
#define NR_RX_RINGS_ONLY ...
#define NR_TX_RINGS_ONLY ...
#define NR_ACCEPT_VNET_HDR ...
#define NR_DO_RX_POLL ...
#define NR_NO_TX_POLL ...
#define NS_BUF_CHANGED ...
#define NS_REPORT ...
#define NS_FORWARD ...
#define NS_NO_LEARN ...
#define NS_INDIRECT ...
#define NS_MOREFRAG ...
#define NR_TIMESTAMP ...
#define NR_FORWARD ...
#define NI_PRIV_MEM ...

struct timeval { ...; };

struct netmap_slot {
	uint32_t buf_idx;
	uint16_t len;
	uint16_t flags;
	uint64_t ptr;
	...;
};

struct netmap_ring {
	int64_t buf_ofs;
	uint32_t num_slots;
	uint32_t nr_buf_size;
	uint16_t ringid;
	uint16_t dir;
	uint32_t head;
	uint32_t cur;
	uint32_t tail;
	uint32_t flags;
	struct timeval ts;
	uint64_t offset_mask;
	uint64_t buf_align;
	char sem[...];
	...;
};

struct netmap_if {
	char ni_name[...];
	uint32_t ni_version;
	uint32_t ni_flags;
	uint32_t ni_tx_rings;
	uint32_t ni_rx_rings;
	uint32_t ni_bufs_head;
	uint32_t ni_host_tx_rings;
	uint32_t ni_host_rx_rings;
	uint32_t ni_spare1[...];
	ssize_t ring_ofs[];
	...;
};

struct nmreq_header {
	uint16_t nr_version;
	uint16_t nr_reqtype;
	uint32_t nr_reserved;
	char nr_name[...];
	uint64_t nr_options;
	uint64_t nr_body;
	...;
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
	...;
};

struct nmreq_option {
	uint64_t nro_next;
	uint32_t nro_reqtype;
	uint32_t nro_status;
	uint64_t nro_size;
	...;
};

/* what an @extmem option fills in (nmbridge/engine.py) */
struct nmreq_pools_info {
	uint64_t nr_memsize;
	uint32_t nr_if_pool_objtotal;
	uint32_t nr_if_pool_objsize;
	uint32_t nr_ring_pool_objtotal;
	uint32_t nr_ring_pool_objsize;
	uint32_t nr_buf_pool_objtotal;
	uint32_t nr_buf_pool_objsize;
	...;
};

struct nmreq_opt_extmem {
	struct nmreq_option nro_opt;
	uint64_t nro_usrptr;
	struct nmreq_pools_info nro_info;
	...;
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
	...;
};

struct nmreq_port_hdr {
	uint32_t nr_hdr_len;
	uint32_t pad1;
	...;
};

struct nmreq {
	char nr_name[...];
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
	uint32_t spare2[...];
	...;
};

const char *nmb_version(void);
struct netmap_slot *nmb_ring_slots(struct netmap_ring *ring);
uint32_t nmb_ioctl_number(int which);
