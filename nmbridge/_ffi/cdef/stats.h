#define NMB_STATE_STARTING ...
#define NMB_STATE_RUNNING ...
#define NMB_STATE_LINK_WAIT ...
#define NMB_STATE_STOPPED ...

struct nmb_ring_stats {
	uint64_t frames;
	uint64_t bytes;
	uint64_t drop_oversize;
	uint64_t drop_chain;
	uint64_t drop_rx;
	uint64_t drop_tx;
	uint64_t txfull;
	uint64_t syncs;
	uint64_t errors;
	uint64_t drop_header;
	uint64_t drop_gso;
	uint64_t gso_frames;
	uint64_t gso_segments;
	uint64_t csum_sw;
	uint64_t filtered;
	uint64_t captured;
	uint64_t capture_dropped;
	uint64_t spare[7];
};

struct nmb_stats_shared {
	uint64_t seq;
	uint64_t heartbeat_ns;
	uint64_t nrings;
	uint64_t state;
	uint64_t spare[4];
	struct nmb_ring_stats ring[];
};

void nmb_stats_publish(struct nmb_stats_shared *shared, const struct nmb_ring_stats *rings,
		       uint32_t nrings, uint64_t state);
