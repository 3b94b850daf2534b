#define NMB_REGION_MAX_PORTS ...
#define NMB_MAX_RINGS ...

struct nmb_region {
	char *mem;
	size_t memsize;
	uint32_t num_slots;
	uint32_t buf_size;
	uint32_t num_bufs;
	uint64_t bufs_ofs;
	uint32_t nports;
	...;
};

int nmb_region_new(uint32_t nports, const uint32_t *rings, uint32_t num_slots,
		   uint32_t buf_size, struct nmb_region **out);
void nmb_region_free(struct nmb_region *region);
struct netmap_if *nmb_region_if(struct nmb_region *region, uint32_t port);
char *nmb_region_buf(struct nmb_region *region, uint32_t buf_idx);
