/* What the emulated ports share, and what each kind provides. */
#ifndef NMB_EPORT_H
#define NMB_EPORT_H

#include "port.h"

int nmb_eport_alloc_batch(struct nmb_port *p, uint32_t max_frame);

/* receive up to n frames into msgs (msg_len, msg_flags set); >= 0 frames, or -errno */
int nmb_packet_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
int nmb_tap_recv(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
/* send up to n frames; > 0 frames sent, or -errno for the first one */
int nmb_packet_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);
int nmb_tap_send(struct nmb_port *p, struct mmsghdr *msgs, unsigned n);

#endif
