#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "region.h"

#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((uint64_t)(a) - 1))
#define PAGE 4096u

static uint64_t ring_size(uint32_t num_slots)
{
	return ALIGN_UP(sizeof(struct netmap_ring) + (uint64_t)num_slots * sizeof(struct netmap_slot),
			NM_CACHE_ALIGN);
}

static void ring_init(struct netmap_ring *ring, uint32_t num_slots, uint32_t buf_size,
		      uint16_t ringid, int is_tx, char *bufs, uint32_t *next_buf)
{
	ring->buf_ofs = bufs - (char *)ring;
	ring->num_slots = num_slots;
	ring->nr_buf_size = buf_size;
	ring->ringid = ringid;
	ring->dir = is_tx ? 1 : 0;
	ring->head = ring->cur = 0;
	/* as the kernel does: a fresh TX ring offers all slots but one, an RX ring none */
	ring->tail = is_tx ? num_slots - 1 : 0;
	for (uint32_t i = 0; i < num_slots; i++) {
		ring->slot[i].buf_idx = (*next_buf)++;
		ring->slot[i].len = (uint16_t)buf_size;
		ring->slot[i].flags = 0;
		ring->slot[i].ptr = 0;
	}
}

int nmb_region_new(uint32_t nports, const uint32_t *rings, uint32_t num_slots,
		   uint32_t buf_size, struct nmb_region **out)
{
	uint64_t total_rings = 0, if_area = 0, rings_area, bufs_ofs, memsize;
	uint64_t if_size[NMB_REGION_MAX_PORTS];
	struct nmb_region *region;
	uint32_t next_buf = 2; /* indices 0 and 1 are reserved, as in netmap */

	*out = NULL;
	if (nports == 0 || nports > NMB_REGION_MAX_PORTS || num_slots < 2 || num_slots > 16384 ||
	    buf_size < 64 || buf_size > 65535 || buf_size % 64 != 0)
		return -EINVAL;
	for (uint32_t p = 0; p < nports; p++) {
		uint64_t n = 0;
		for (int k = 0; k < 4; k++) {
			if (rings[4 * p + k] > NMB_MAX_RINGS)
				return -EINVAL;
			n += rings[4 * p + k];
		}
		if (n == 0)
			return -EINVAL;
		total_rings += n;
		if_size[p] = ALIGN_UP(sizeof(struct netmap_if) + n * sizeof(ssize_t), NM_CACHE_ALIGN);
		if_area += if_size[p];
	}
	rings_area = total_rings * ring_size(num_slots);
	bufs_ofs = ALIGN_UP(ALIGN_UP(if_area, NM_CACHE_ALIGN) + rings_area, PAGE);
	memsize = bufs_ofs + (uint64_t)(2 + total_rings * num_slots) * buf_size;
	if (2 + total_rings * num_slots > UINT32_MAX)
		return -EINVAL;

	region = calloc(1, sizeof(*region));
	if (region == NULL)
		return -ENOMEM;
	region->mem = mmap(NULL, memsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region->mem == MAP_FAILED) {
		free(region);
		return -ENOMEM;
	}
	region->memsize = memsize;
	region->num_slots = num_slots;
	region->buf_size = buf_size;
	region->num_bufs = (uint32_t)(2 + total_rings * num_slots);
	region->bufs_ofs = bufs_ofs;
	region->nports = nports;

	char *ring_at = region->mem + ALIGN_UP(if_area, NM_CACHE_ALIGN);
	uint64_t if_at = 0;
	for (uint32_t p = 0; p < nports; p++) {
		struct netmap_if *nifp = (struct netmap_if *)(region->mem + if_at);
		const uint32_t *c = &rings[4 * p];
		uint32_t idx = 0;

		region->if_ofs[p] = if_at;
		strncpy(nifp->ni_name, "nmbridge", sizeof(nifp->ni_name) - 1);
		nifp->ni_version = NETMAP_API;
		nifp->ni_flags = NI_PRIV_MEM;
		nifp->ni_tx_rings = c[0];
		nifp->ni_host_tx_rings = c[1];
		nifp->ni_rx_rings = c[2];
		nifp->ni_host_rx_rings = c[3];
		nifp->ni_bufs_head = 0;
		/* ring_ofs order: NIC TX, host TX, NIC RX, host RX; ringid as the kernel numbers them */
		for (int k = 0; k < 4; k++) {
			int is_tx = k < 2;
			uint32_t base = (k == 1 || k == 3) ? (is_tx ? c[0] : c[2]) : 0;
			for (uint32_t r = 0; r < c[k]; r++) {
				struct netmap_ring *ring = (struct netmap_ring *)ring_at;
				ring_init(ring, num_slots, buf_size, (uint16_t)(base + r), is_tx,
					  region->mem + bufs_ofs, &next_buf);
				nifp->ring_ofs[idx++] = ring_at - (char *)nifp;
				ring_at += ring_size(num_slots);
			}
		}
		if_at += if_size[p];
	}
	*out = region;
	return 0;
}

void nmb_region_free(struct nmb_region *region)
{
	if (region == NULL)
		return;
	munmap(region->mem, region->memsize);
	free(region);
}

struct netmap_if *nmb_region_if(struct nmb_region *region, uint32_t port)
{
	if (port >= region->nports)
		return NULL;
	return (struct netmap_if *)(region->mem + region->if_ofs[port]);
}

char *nmb_region_buf(struct nmb_region *region, uint32_t buf_idx)
{
	if (buf_idx >= region->num_bufs)
		return NULL;
	return region->mem + region->bufs_ofs + (uint64_t)buf_idx * region->buf_size;
}
