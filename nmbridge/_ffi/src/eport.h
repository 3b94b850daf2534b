/* What the emulated ports share, and what each kind provides. */
#ifndef NMB_EPORT_H
#define NMB_EPORT_H

#include "port.h"

int nmb_eport_alloc_batch(struct nmb_port *p, uint32_t max_frame);
int nmb_ifname_index(const char *name); /* 0 if there is no such interface */

/* packet ports: their own kernel side over TPACKET rings */
int nmb_packet_rxsync(struct nmb_port *p, struct nmb_ring_stats *rxs);
int nmb_packet_txsync(struct nmb_port *p, struct nmb_ring_stats *txs);
int nmb_packet_tx_busy(const struct nmb_port *p);
uint32_t nmb_packet_tx_discard(struct nmb_port *p);
uint32_t nmb_packet_rx_discard(struct nmb_port *p);
int nmb_eport_classify(struct nmb_port *p, int err);
int nmb_eport_complete_csum(struct netmap_ring *ring, uint32_t first, uint32_t len,
			    uint32_t start, uint32_t offset);

/* receive up to n frames into msgs (msg_len, msg_flags set); >= 0 frames, or -errno */
int nmb_packet_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
int nmb_tap_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
/* send up to n frames; > 0 frames sent, or -errno for the first one */
int nmb_packet_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
int nmb_tap_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);

#endif
