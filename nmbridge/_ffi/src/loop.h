/* The poll loop of one bridge: two ports, both directions. */
#ifndef NMB_LOOP_H
#define NMB_LOOP_H

#include <stdint.h>

#include "engine.h"
#include "port.h"
#include "stats.h"

#define NMB_RUN_BUDGET 0  /* the time budget ran out: call again */
#define NMB_RUN_STOP 1    /* stop was requested */
#define NMB_RUN_LIMIT 2   /* the frame count was reached */
#define NMB_RUN_SIGNAL 3  /* a signal interrupted poll(): let Python run its handlers */

#define NMB_COALESCE_AFTER 8       /* busy wake-ups in a row before the loop coalesces */
#define NMB_COALESCE_GATHER 8u     /* ... busy: at a rate that fills a sleep with this many frames */
#define NMB_COALESCE_AFTER_MAX 256 /* ... after sleeps that gathered too little, at most */
#define NMB_COALESCE_MIN_FRAMES 2  /* a sleep that gathers fewer was not worth it */
#define NMB_COALESCE_MAX_AVG 2048u /* ... busy with frames no larger than this on average */
#define NMB_PERSISTENT_ERROR_MS 5000 /* ring errors for this long, without a break: the port failed */

struct nmb_bridge {
	struct nmb_port *port[2];
	int zerocopy;
	int busy;                 /* never sleep: poll with timeout 0 */
	uint32_t coalesce_us;     /* emulated ports: gather frames this long between wake-ups under load (0: off) */
	uint32_t coalesce_streak; /* busy wake-ups in a row (NMB_COALESCE_GATHER) */
	uint32_t coalesce_after;  /* the streak that starts coalescing */
	int woke;                 /* a wake-up whose frames are not all in yet (nmb_coalesce_settled) */
	uint64_t last_wake_ns;    /* when poll() last returned with events */
	uint64_t wake_gap_ns;     /* the interval that wake-up ended */
	uint64_t forwarded_at_judged; /* forwarded when the last wake-up was judged */
	uint64_t bytes_at_judged; /* the bytes that had entered then */
	uint32_t burst;
	int poll_timeout_ms;
	int stop;                 /* set from any thread to end nmb_bridge_run */
	uint64_t count_limit;     /* stop after this many frames (0: never) */
	uint64_t forwarded;       /* frames forwarded, both directions */
	uint32_t next_rx[2];
	struct nmb_xlate xlate[2]; /* from port i to the other: what the engine does (offload.h) */
	struct nmb_frame_hooks hooks[2]; /* from port i to the other: its filter, the capture */
	uint32_t nstats;
	struct nmb_ring_stats *stats;   /* private; published to shared */
	struct nmb_rx_state *rxstate;   /* the engine's, indexed as stats (RX rings only) */
	struct nmb_stats_shared *shared;
	int failed_port;          /* index of the port that failed, -1 if none */
	int failed_err;           /* its errno */
	uint64_t state;
};

struct nmb_bridge *nmb_bridge_new(struct nmb_port *a, struct nmb_port *b, uint32_t burst);
void nmb_bridge_free(struct nmb_bridge *b);
int nmb_bridge_can_zerocopy(const struct nmb_bridge *b);
int nmb_bridge_run(struct nmb_bridge *b, uint32_t budget_ms);
int nmb_bridge_flush(struct nmb_bridge *b, uint32_t timeout_ms); /* frames dropped at the stop */
void nmb_bridge_publish(struct nmb_bridge *b);
void nmb_bridge_request_stop(struct nmb_bridge *b);

/*
 * Coalescing's measure of a load, as the loop takes it (exported for the
 * tests, which play the clock): poll() returned with events at now_ns; then,
 * once the passes after it have taken in what woke it, `forwarded` frames of
 * `bytes` had entered the bridge in all.
 */
void nmb_coalesce_woke(struct nmb_bridge *b, uint64_t now_ns);
void nmb_coalesce_settled(struct nmb_bridge *b, uint64_t forwarded, uint64_t bytes);

/*
 * Before the first run: the filter of the frames from port `from` (match
 * NULL: none), and the capture of what crosses both ways (capture NULL:
 * none). The engine calls them per frame, through these pointers only.
 */
void nmb_bridge_set_filter(struct nmb_bridge *b, int from,
			   int (*match)(const void *, const uint8_t *, uint32_t, uint32_t),
			   const void *filter);
void nmb_bridge_set_capture(struct nmb_bridge *b,
			    int (*capture)(void *, uint32_t, const struct iovec *, int, uint32_t),
			    void *cap);

#endif
