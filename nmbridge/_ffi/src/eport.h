/*
 * The emulated ports: what each kind provides (its ops, set when it opens),
 * and the helpers a kind may use. eport.c is the shared machinery and calls a
 * kind only through its ops; a kind file never calls back into eport.c's
 * dispatch, only into the helpers below.
 */
#ifndef NMB_EPORT_H
#define NMB_EPORT_H

#include "port.h"

struct nmb_eport_ops {
	/*
	 * What the shared rxsync and txsync read and write the socket with:
	 * recv takes up to n frames into msgs (msg_len, msg_flags set), >= 0
	 * frames or -errno; send sends up to n frames, > 0 sent or -errno for
	 * the first one.
	 */
	int (*recv)(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
	int (*send)(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
	/* an error that may mean the interface is gone: -errno if so (fatal), else 0 */
	int (*classify)(struct nmb_port *p, int err);
	void (*close)(struct nmb_port *p); /* what the kind holds beyond fd and txfd; may be NULL */

	/*
	 * A kind with a kernel side of its own (a packet socket's TPACKET rings)
	 * overrides the shared one (and needs no recv or send); NULL entries take
	 * the shared path: rxsync and txsync through recv and send, no socket
	 * frames of its own to wait on (tx_busy) or to discard at the stop
	 * (tx_discard, rx_discard: then what the socket holds is read off it),
	 * no drop counters (collect_drops).
	 */
	int (*rxsync)(struct nmb_port *p, struct nmb_ring_stats *rxs);
	int (*txsync)(struct nmb_port *p, struct nmb_ring_stats *txs);
	int (*tx_busy)(const struct nmb_port *p);
	uint32_t (*tx_discard)(struct nmb_port *p); /* returns the frames discarded */
	uint32_t (*rx_discard)(struct nmb_port *p);
	int (*collect_drops)(struct nmb_port *p, struct nmb_ring_stats *rxs); /* 0 or -errno */
};

/* helpers for the kinds */
int nmb_eport_alloc_batch(struct nmb_port *p, uint32_t max_frame);
uint32_t nmb_eport_max_rx(const struct nmb_port *p); /* the longest frame it receives, header included */
void nmb_eport_rx_prepare(struct nmb_port *p, uint32_t m, uint32_t first);
int nmb_eport_rx_frame_ok(struct nmb_port *p, struct nmb_ring_stats *rxs, int m, uint32_t src,
			  uint32_t *len, uint32_t *used);
int nmb_eport_frame_ok(const struct nmb_port *p, struct netmap_ring *ring, uint32_t first,
		       uint32_t len, struct nmb_ring_stats *rxs);
int nmb_eport_hdr_ok(const struct nmb_port *p, const struct nmb_vnet_hdr *vh, uint32_t len,
		     uint32_t bs, struct nmb_ring_stats *rxs);
int nmb_eport_frame_walk(const struct nmb_port *p, struct netmap_ring *ring, uint32_t first,
			 uint32_t len, const struct nmb_vnet_hdr *vh, struct nmb_ring_stats *rxs);
enum tx_chain { TX_CHAIN_OPEN, TX_CHAIN_BAD, TX_CHAIN_OK };
enum tx_chain nmb_eport_tx_chain(const struct nmb_port *p, uint32_t i, uint32_t head,
				 struct iovec *iov, uint32_t *end, uint32_t *cnt, uint32_t *total);
int nmb_ifname_index(const char *name); /* 0 if there is no such interface */
int nmb_iov_insert(const struct iovec *iov, int niov, uint32_t len, uint32_t at,
		   const uint8_t *ins, uint32_t n);

#endif
