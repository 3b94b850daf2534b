/* partial: the tests and benchmarks allocate it and set what the loop sets */
struct nmb_xlate {
	uint32_t src_hdr;
	uint32_t dst_hdr;
	uint32_t dst_offloads;
	uint32_t check;
	uint32_t dst_max_frame;
};
struct nmb_frame_hooks {
	int (*match)(const void *filter, const uint8_t *pkt, uint32_t buflen, uint32_t wirelen);
	const void *filter;
	int (*capture)(void *cap, uint32_t dir, const struct iovec *iov, int niov, uint32_t len);
	void *cap;
	uint32_t dir;
};
struct nmb_rx_state {
	uint32_t hdr;
	const struct nmb_xlate *xlate;
	const struct nmb_frame_hooks *hooks;
	...;
};
uint32_t nmb_ring_move(struct netmap_ring *rx, struct netmap_ring *tx, uint32_t limit,
		       int zerocopy, struct nmb_rx_state *st, struct nmb_ring_stats *rxs,
		       struct nmb_ring_stats *txs);
uint32_t nmb_forward(struct netmap_ring *const *rx, uint32_t nrx, struct netmap_ring *const *tx,
		     uint32_t ntx, uint32_t burst, int zerocopy, struct nmb_rx_state *st,
		     struct nmb_ring_stats *rxs, struct nmb_ring_stats *txs, uint32_t *next_rx);
int nmb_rx_pending(struct netmap_ring *const *rx, uint32_t nrx);
int nmb_tx_short(struct netmap_ring *const *rx, uint32_t nrx, struct netmap_ring *const *tx,
		 uint32_t ntx, const struct nmb_rx_state *st);
