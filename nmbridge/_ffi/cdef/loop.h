#define NMB_RUN_BUDGET ...
#define NMB_RUN_STOP ...
#define NMB_RUN_LIMIT ...
#define NMB_RUN_SIGNAL ...
#define NMB_COALESCE_AFTER ...
#define NMB_COALESCE_GATHER ...

/* partial: the layout is src/loop.h's; these are the fields Python reads or sets */
struct nmb_bridge {
	int zerocopy;
	int busy;
	uint32_t coalesce_us;
	uint32_t coalesce_streak; /* the tests read these two */
	uint32_t coalesce_after;
	int poll_timeout_ms;
	uint64_t count_limit;
	uint64_t forwarded;
	uint32_t nstats;
	struct nmb_ring_stats *stats;
	struct nmb_stats_shared *shared;
	int failed_port;
	int failed_err;
	uint64_t state;
	...;
};

struct nmb_bridge *nmb_bridge_new(struct nmb_port *a, struct nmb_port *b, uint32_t burst);
void nmb_bridge_free(struct nmb_bridge *b);
int nmb_bridge_can_zerocopy(const struct nmb_bridge *b);
int nmb_bridge_run(struct nmb_bridge *b, uint32_t budget_ms);
int nmb_bridge_flush(struct nmb_bridge *b, uint32_t timeout_ms);
void nmb_bridge_publish(struct nmb_bridge *b);
void nmb_bridge_request_stop(struct nmb_bridge *b);
void nmb_coalesce_woke(struct nmb_bridge *b, uint64_t now_ns);
void nmb_coalesce_settled(struct nmb_bridge *b, uint64_t forwarded, uint64_t bytes);
void nmb_bridge_set_filter(struct nmb_bridge *b, int from,
			   int (*match)(const void *, const uint8_t *, uint32_t, uint32_t),
			   const void *filter);
void nmb_bridge_set_capture(struct nmb_bridge *b,
			    int (*capture)(void *, uint32_t, const struct iovec *, int, uint32_t),
			    void *cap);
