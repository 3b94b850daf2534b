#define NMB_PORT_KERNEL ...
#define NMB_PORT_PACKET ...
#define NMB_PORT_TAP ...
#define NMB_BATCH ...

/* partial: the layout is src/port.h's; these are the fields Python reads or sets */
struct nmb_port {
	int kind;
	int fd;
	int ifindex;
	int link_down;
	uint32_t hdr_len;
	uint32_t offloads;
	uint32_t max_frame;
	struct netmap_if *nifp;
	struct nmb_region *region;
	uint32_t ntx, nrx;
	struct netmap_ring *tx[...];
	struct netmap_ring *rx[...];
	...;
};

struct nmb_port *nmb_port_new(void);
void nmb_port_free(struct nmb_port *p);
int nmb_port_bind(struct nmb_port *p, struct netmap_if *nifp);
int nmb_kport_open(struct nmb_port *p, const char *dev);
int nmb_kport_register(struct nmb_port *p, struct nmreq_header *hdr);
int nmb_kport_legacy_api(const char *dev, uint32_t *api_out);
int nmb_mmap_region(int fd, uint64_t size, void **base_out);
int nmb_munmap_region(void *base, uint64_t size);
int nmb_kport_txsync(struct nmb_port *p);
int nmb_kport_rxsync(struct nmb_port *p);
int nmb_packet_open(struct nmb_port *p, int ifindex, uint32_t max_frame, int bufsize);
int nmb_tap_open(struct nmb_port *p, const char *name, uint32_t max_frame, int bring_up);
int nmb_eport_rxsync(struct nmb_port *p, struct nmb_ring_stats *rxs);
int nmb_eport_txsync(struct nmb_port *p, struct nmb_ring_stats *txs);
int nmb_eport_tx_pending(const struct nmb_port *p);
int nmb_eport_rx_room(const struct nmb_port *p);
int nmb_eport_collect_drops(struct nmb_port *p, struct nmb_ring_stats *rxs);
int nmb_ifindex_exists(int ifindex);
int nmb_ctl_socket(void);

int nmb_iov_insert(const struct iovec *iov, int niov, uint32_t len, uint32_t at,
		   const uint8_t *ins, uint32_t n);
