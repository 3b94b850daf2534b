#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "port.h"

struct nmb_port *nmb_port_new(void)
{
	struct nmb_port *p = calloc(1, sizeof(*p));

	if (p)
		p->fd = p->txfd = -1;
	return p;
}

void nmb_port_free(struct nmb_port *p)
{
	if (p == NULL)
		return;
	if (p->ops != NULL)
		nmb_eport_close(p);
	if (p->fd >= 0)
		close(p->fd);
	if (p->txfd >= 0)
		close(p->txfd);
	free(p->msgs);
	free(p->iovs);
	free(p);
}

int nmb_port_bind(struct nmb_port *p, struct netmap_if *nifp)
{
	uint32_t ntx_all = nifp->ni_tx_rings + nifp->ni_host_tx_rings;
	uint32_t nrx_all = nifp->ni_rx_rings + nifp->ni_host_rx_rings;

	if (ntx_all > NMB_MAX_RINGS * 2 || nrx_all > NMB_MAX_RINGS * 2)
		return -E2BIG; /* more rings than NMB_MAX_RINGS */
	p->nifp = nifp;
	p->ntx = p->nrx = 0;
	for (uint32_t i = 0; i < ntx_all; i++) {
		struct netmap_ring *ring = nmb_if_ring(nifp, i);
		if (ring == NULL)
			continue;
		if (p->ntx == NMB_MAX_RINGS)
			return -E2BIG; /* more rings than NMB_MAX_RINGS */
		p->ktx[p->ntx].hwcur = ring->head;
		p->tx[p->ntx++] = ring;
	}
	for (uint32_t i = 0; i < nrx_all; i++) {
		struct netmap_ring *ring = nmb_if_ring(nifp, ntx_all + i);
		if (ring == NULL)
			continue;
		if (p->nrx == NMB_MAX_RINGS)
			return -E2BIG; /* more rings than NMB_MAX_RINGS */
		p->krx[p->nrx].hwcur = ring->head;
		p->krx[p->nrx].hwtail = ring->tail;
		p->rx[p->nrx++] = ring;
	}
	return 0;
}
