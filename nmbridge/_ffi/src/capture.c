/*
 * Capture: the loop copies frames into a ring, a writer thread turns them into
 * pcapng (capture.h). The ring is single-producer (the loop's thread, which
 * serves both directions) and single-consumer (the writer): positions only
 * grow, the producer publishes a record with a release store of head after
 * writing it, the writer frees its bytes with a release store of tail after
 * copying them out. Neither side ever waits for the other: a full ring is a
 * frame not captured, an empty one a short sleep of the writer. Nor does the
 * writer take the loop's CPU: it runs as SCHED_IDLE (see background()), and
 * what the ring holds at the close is written by the closing thread.
 */
#include "capture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64
#define OUT_SIZE 8192 /* a section's headers: SHB and two IDBs (names of at most 1024 bytes) */
#define NAP_NS 200000L /* the writer's sleep on an empty ring ... */
#define NAPS 25        /* ... so many times (5 ms), then it dozes until the loop rings */
#define DOZE_MS 100    /* the longest doze (a ring of the doorbell can be missed: see below) */

/* pcapng (draft-ietf-opsawg-pcapng): block types, options, flags */
#define PCAPNG_SHB 0x0A0D0D0Au
#define PCAPNG_IDB 0x00000001u
#define PCAPNG_EPB 0x00000006u
#define PCAPNG_MAGIC 0x1A2B3C4Du
#define OPT_END 0
#define SHB_USERAPPL 4
#define IF_NAME 2
#define IF_TSRESOL 9
#define EPB_FLAGS 2
#define EPB_INBOUND 1u
#define EPB_OUTBOUND 2u
#define LINKTYPE_ETHERNET 1

/*
 * The ring holds the file's own Enhanced Packet Blocks, written whole by the
 * producer: the writer hands them to write() straight from the ring (one copy,
 * into the page cache), never through a buffer of its own. Blocks are
 * multiples of 4 bytes, so every block starts 4-byte aligned in the ring.
 */
#define EPB_HEAD 28 /* type, total length, interface, timestamp (2), caplen, len */
#define EPB_TAIL 16 /* the epb_flags option, opt_endofopt, total length again */
/* the most one write() takes: the ring is freed as it goes, and a close waits for at
 * most one such write of a writer that gets little CPU time */
#define WRITE_MAX (1u << 18)

struct nmb_capture {
	/* the producer's line */
	_Alignas(CACHE_LINE) _Atomic uint64_t head;
	uint64_t tail_seen; /* tail as the producer last read it */
	int (*match)(const void *, const uint8_t *, uint32_t, uint32_t);
	const void *filter;
	uint32_t snaplen;
	int doorbell;       /* an eventfd the loop writes to wake a dozing writer */
	/* the writer's line */
	_Alignas(CACHE_LINE) _Atomic uint64_t tail;
	_Atomic int failed; /* the writer's errno once it cannot write: the producer stops copying */
	_Atomic int stop;
	_Atomic int dozing; /* the writer waits on the doorbell */
	_Atomic uint64_t written, lost, opened; /* frames, frames, files */
	_Atomic uint32_t file;
	/* set at open */
	_Alignas(CACHE_LINE) uint8_t *ring;
	uint64_t size, mask;
	int fd;
	char *path;
	uint64_t file_bytes, in_file;
	uint32_t files;
	char *if_name[2];
	uint8_t *out;        /* a section's headers, waiting for write() */
	uint32_t out_len;
	pthread_t thread;
	int started;
};

static uint32_t pad4(uint32_t n)
{
	return (n + 3u) & ~3u;
}

static void ring_put(struct nmb_capture *c, uint64_t pos, const void *src, uint32_t n)
{
	uint64_t off = pos & c->mask;
	uint64_t first = c->size - off < n ? c->size - off : n;

	memcpy(c->ring + off, src, first);
	if (first < n)
		memcpy(c->ring, (const uint8_t *)src + first, n - first);
}

static void ring_get(const struct nmb_capture *c, uint64_t pos, void *dst, uint32_t n)
{
	uint64_t off = pos & c->mask;
	uint64_t first = c->size - off < n ? c->size - off : n;

	memcpy(dst, c->ring + off, first);
	if (first < n)
		memcpy((uint8_t *)dst + first, c->ring, n - first);
}

static void ring_doorbell(struct nmb_capture *c)
{
	uint64_t one = 1;

	if (write(c->doorbell, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is full, the writer has plenty of rings to read */
	}
}

static void put_le32(uint8_t *at, uint32_t v)
{
	memcpy(at, &v, 4);
}

int nmb_capture_frame(void *cap, uint32_t dir, const struct iovec *iov, int niov, uint32_t len)
{
	static const uint8_t zeros[4];
	struct nmb_capture *c = cap;
	uint64_t head = atomic_load_explicit(&c->head, memory_order_relaxed);
	uint32_t caplen = len < c->snaplen ? len : c->snaplen, left;
	uint32_t need = EPB_HEAD + pad4(caplen) + EPB_TAIL;
	uint64_t pos, ts_ns;
	uint8_t h[EPB_HEAD], t[EPB_TAIL];
	struct timespec ts;

	if (c->match != NULL && niov > 0 &&
	    !c->match(c->filter, iov[0].iov_base, (uint32_t)iov[0].iov_len, len))
		return -1;
	if (atomic_load_explicit(&c->failed, memory_order_relaxed))
		return 0;
	if (need > c->size - (head - c->tail_seen)) {
		c->tail_seen = atomic_load_explicit(&c->tail, memory_order_acquire);
		if (need > c->size - (head - c->tail_seen))
			return 0;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ts_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	put_le32(h, PCAPNG_EPB);
	put_le32(h + 4, need);
	put_le32(h + 8, dir); /* the interface: one IDB per direction */
	put_le32(h + 12, (uint32_t)(ts_ns >> 32));
	put_le32(h + 16, (uint32_t)ts_ns);
	put_le32(h + 20, caplen);
	put_le32(h + 24, len);
	ring_put(c, head, h, EPB_HEAD);
	pos = head + EPB_HEAD;
	left = caplen;
	for (int k = 0; k < niov && left > 0; k++) {
		uint32_t piece = iov[k].iov_len < left ? (uint32_t)iov[k].iov_len : left;

		ring_put(c, pos, iov[k].iov_base, piece);
		pos += piece;
		left -= piece;
	}
	if (pad4(caplen) > caplen)
		ring_put(c, pos, zeros, pad4(caplen) - caplen);
	pos = head + EPB_HEAD + pad4(caplen);
	put_le32(t, EPB_FLAGS | 4u << 16); /* code, then length 4 */
	put_le32(t + 4, dir == 0 ? EPB_INBOUND : EPB_OUTBOUND);
	put_le32(t + 8, OPT_END);
	put_le32(t + 12, need);
	ring_put(c, pos, t, EPB_TAIL);
	atomic_store_explicit(&c->head, head + need, memory_order_release);
	/* a writer idle for a while dozes: ring (a non-blocking eventfd write, once per
	 * doze). No fence here: a writer that began to doze just now may be missed; the
	 * next frame rings, and a lone last frame waits at most DOZE_MS. */
	if (atomic_load_explicit(&c->dozing, memory_order_relaxed))
		ring_doorbell(c);
	return 1;
}

/* ------------------------------------------------------------ the writer */

static void put32(struct nmb_capture *c, uint32_t v)
{
	memcpy(c->out + c->out_len, &v, 4);
	c->out_len += 4;
}

static void put_bytes(struct nmb_capture *c, const void *p, uint32_t n)
{
	memcpy(c->out + c->out_len, p, n);
	memset(c->out + c->out_len + n, 0, pad4(n) - n);
	c->out_len += pad4(n);
}

static void put16x2(struct nmb_capture *c, uint16_t a, uint16_t b)
{
	memcpy(c->out + c->out_len, &a, 2);
	memcpy(c->out + c->out_len + 2, &b, 2);
	c->out_len += 4;
}

static void put_option(struct nmb_capture *c, uint16_t code, const void *p, uint16_t n)
{
	put16x2(c, code, n);
	put_bytes(c, p, n);
}

/* Close a block begun at start: its total length at both ends. */
static void end_block(struct nmb_capture *c, uint32_t start)
{
	uint32_t total = c->out_len + 4 - start;

	memcpy(c->out + start + 4, &total, 4);
	put32(c, total);
}

static void put_headers(struct nmb_capture *c)
{
	static const char appl[] = "nmbridge " NMB_VERSION;
	uint32_t start = c->out_len;
	uint64_t section_len = UINT64_MAX; /* -1: not given */

	put32(c, PCAPNG_SHB);
	put32(c, 0);
	put32(c, PCAPNG_MAGIC);
	put16x2(c, 1, 0); /* version 1.0 */
	memcpy(c->out + c->out_len, &section_len, 8);
	c->out_len += 8;
	put_option(c, SHB_USERAPPL, appl, (uint16_t)strlen(appl));
	put32(c, OPT_END);
	end_block(c, start);
	for (int d = 0; d < 2; d++) {
		uint8_t tsresol = 9; /* 10^-9 s */

		start = c->out_len;
		put32(c, PCAPNG_IDB);
		put32(c, 0);
		put16x2(c, LINKTYPE_ETHERNET, 0); /* then 16 bits reserved */
		put32(c, c->snaplen);
		put_option(c, IF_NAME, c->if_name[d], (uint16_t)strlen(c->if_name[d]));
		put_option(c, IF_TSRESOL, &tsresol, 1);
		put32(c, OPT_END);
		end_block(c, start);
	}
}

static void fail(struct nmb_capture *c, int err)
{
	int none = 0;

	atomic_compare_exchange_strong(&c->failed, &none, err ? err : EIO);
}

/* writev() the whole of iov (changed as it goes): 0, or -1 once the capture has failed */
static int write_all(struct nmb_capture *c, struct iovec *iov, int n)
{
	while (n > 0 && !atomic_load(&c->failed)) {
		ssize_t w = writev(c->fd, iov, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fail(c, w < 0 ? errno : EIO);
			break;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return atomic_load(&c->failed) ? -1 : 0;
}

/* write() the section's headers that wait in out */
static void flush_out(struct nmb_capture *c)
{
	struct iovec iov = {c->out, c->out_len};

	if (c->out_len > 0)
		write_all(c, &iov, 1);
	c->out_len = 0;
}

/* The frames' blocks in the ring from from to to, straight to the file; on an
 * error the capture stops and they are lost. */
static void write_run(struct nmb_capture *c, uint64_t from, uint64_t to, uint32_t frames)
{
	uint64_t off = from & c->mask, n = to - from;
	struct iovec iov[2];
	int k = 1;

	iov[0].iov_base = c->ring + off;
	iov[0].iov_len = c->size - off < n ? c->size - off : n;
	if (iov[0].iov_len < n) {
		iov[1].iov_base = c->ring;
		iov[1].iov_len = n - iov[0].iov_len;
		k = 2;
	}
	if (write_all(c, iov, k) == 0)
		atomic_fetch_add_explicit(&c->written, frames, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&c->lost, frames, memory_order_relaxed);
	c->in_file += n;
}

int nmb_capture_file_name(char *buf, uint32_t size, const char *path, uint32_t n, uint32_t files)
{
	int digits = 0;
	int len;

	/* tcpdump: -W COUNT numbers every file, with the digits COUNT - 1 needs;
	 * without it the first file is FILE itself, the next FILE1, FILE2, ... */
	for (uint32_t x = files > 0 ? files - 1 : 0; x > 0; x /= 10)
		digits++;
	if (n == 0 && digits == 0)
		len = snprintf(buf, size, "%s", path);
	else
		len = snprintf(buf, size, "%s%0*u", path, digits, n);
	return len < 0 || (uint32_t)len >= size ? -ENAMETOOLONG : 0;
}

static void next_file(struct nmb_capture *c)
{
	uint32_t n = atomic_load(&c->file) + 1;
	char name[4096];
	int fd;

	flush_out(c);
	if (atomic_load(&c->failed))
		return;
	if (c->files > 0)
		n %= c->files;
	if (close(c->fd) < 0 && errno != EINTR) {
		c->fd = -1;
		fail(c, errno);
		return;
	}
	c->fd = -1;
	if (nmb_capture_file_name(name, sizeof(name), c->path, n, c->files) < 0) {
		fail(c, ENAMETOOLONG);
		return;
	}
	fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fail(c, errno);
		return;
	}
	c->fd = fd;
	atomic_store(&c->file, n);
	atomic_fetch_add_explicit(&c->opened, 1, memory_order_relaxed);
	put_headers(c);
	c->in_file = c->out_len;
	flush_out(c);
}

/* Wait for the loop's doorbell (or DOZE_MS, or the stop): an idle capture costs
 * 10 wake-ups a second, a busy one no system call in the loop. */
static void doze(struct nmb_capture *c, uint64_t tail)
{
	struct pollfd p = {c->doorbell, POLLIN, 0};
	uint64_t rings;

	atomic_store(&c->dozing, 1);
	if (atomic_load(&c->head) == tail && !atomic_load(&c->stop))
		poll(&p, 1, DOZE_MS);
	atomic_store(&c->dozing, 0);
	if (read(c->doorbell, &rings, sizeof(rings)) < 0) {
		/* EAGAIN: nobody rang */
	}
}

/* The writer's thread yields its core to any other work, the loop's first: on a
 * core that forwarding keeps busy the ring fills and frames cross uncaptured
 * (counted), rather than the writer's copies into the page cache taking the
 * loop's time (tcpdump's bargain: the kernel forwards first, the capture
 * process gets what is left). Lowering one's own priority needs no privilege;
 * where a system call filter refuses it (the unit lets it through), the capture
 * still works, sharing the core as any thread does. */
static void background(void)
{
	struct sched_param none = {0};

	(void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
}

/* Write the blocks from tail up to head, a run at a time, and free them; between two
 * runs, stop early once *quit is set (NULL: never). The new tail. */
static uint64_t write_runs(struct nmb_capture *c, uint64_t tail, uint64_t head,
			   const _Atomic int *quit)
{
	while (tail != head && (quit == NULL || !atomic_load_explicit(quit, memory_order_acquire))) {
		uint64_t end = tail;
		uint32_t frames = 0;

		/* tcpdump -C: a new file before a packet once the current one is larger */
		if (c->file_bytes > 0 && c->in_file > c->file_bytes &&
		    !atomic_load_explicit(&c->failed, memory_order_relaxed))
			next_file(c);
		/* a run of whole blocks, up to the one that fills the file */
		while (end != head && end - tail < WRITE_MAX) {
			uint32_t size;

			ring_get(c, end + 4, &size, 4);
			end += size;
			frames++;
			if (c->file_bytes > 0 && c->in_file + (end - tail) > c->file_bytes)
				break;
		}
		write_run(c, tail, end, frames);
		tail = end;
		atomic_store_explicit(&c->tail, tail, memory_order_release);
	}
	return tail;
}

/* The writer: drains the ring while the capture runs. Once asked to stop it leaves at
 * the end of its current run; nmb_capture_close() writes the rest on its own thread,
 * which is not SCHED_IDLE: a stop waits for one run of the writer's (WRITE_MAX), not
 * for the whole ring at the CPU time that others leave an idle-class thread. */
static void *writer(void *arg)
{
	struct nmb_capture *c = arg;
	uint64_t tail = atomic_load(&c->tail);
	int naps = 0;

	background();
	put_headers(c);
	c->in_file = c->out_len;
	flush_out(c);
	while (!atomic_load_explicit(&c->stop, memory_order_acquire)) {
		uint64_t head = atomic_load_explicit(&c->head, memory_order_acquire);

		if (head == tail) {
			if (naps++ < NAPS)
				nanosleep(&(struct timespec){0, NAP_NS}, NULL);
			else
				doze(c, tail);
			continue;
		}
		naps = 0;
		tail = write_runs(c, tail, head, &c->stop);
	}
	return NULL;
}

/* ------------------------------------------------------------ open, close */

void nmb_capture_free(struct nmb_capture *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->doorbell >= 0)
		close(c->doorbell);
	free(c->ring);
	free(c->out);
	free(c->path);
	free(c->if_name[0]);
	free(c->if_name[1]);
	free(c);
}

int nmb_capture_open(const struct nmb_capture_config *cfg, struct nmb_capture **out)
{
	struct nmb_capture *c;
	uint64_t size = NMB_CAPTURE_RING_MIN;
	int err;

	*out = NULL;
	if (cfg->snaplen == 0 || cfg->snaplen > NMB_CAPTURE_SNAPLEN_MAX ||
	    cfg->ring_bytes > NMB_CAPTURE_RING_MAX || (cfg->file_bytes > 0 && cfg->path == NULL) ||
	    cfg->if_name[0] == NULL || cfg->if_name[1] == NULL ||
	    strlen(cfg->if_name[0]) > 1024 || strlen(cfg->if_name[1]) > 1024) {
		close(cfg->fd);
		return -EINVAL;
	}
	while (size < cfg->ring_bytes)
		size <<= 1;
	c = aligned_alloc(CACHE_LINE, (sizeof(*c) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
	if (c == NULL) {
		close(cfg->fd);
		return -ENOMEM;
	}
	memset(c, 0, sizeof(*c));
	c->fd = cfg->fd;
	c->doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->size = size;
	c->mask = size - 1;
	c->snaplen = cfg->snaplen;
	c->file_bytes = cfg->file_bytes;
	c->files = cfg->files;
	atomic_store(&c->file, cfg->first);
	atomic_store(&c->opened, 1);
	c->ring = malloc(size);
	c->out = malloc(OUT_SIZE);
	c->path = cfg->path != NULL ? strdup(cfg->path) : NULL;
	c->if_name[0] = strdup(cfg->if_name[0]);
	c->if_name[1] = strdup(cfg->if_name[1]);
	if (c->doorbell < 0) {
		err = errno;
		nmb_capture_free(c);
		return -err;
	}
	if (c->ring == NULL || c->out == NULL || (cfg->path != NULL && c->path == NULL) ||
	    c->if_name[0] == NULL || c->if_name[1] == NULL) {
		nmb_capture_free(c);
		return -ENOMEM;
	}
	memset(c->ring, 0, size); /* touched now: the loop never waits for a page fault */
	err = pthread_create(&c->thread, NULL, writer, c);
	if (err != 0) {
		nmb_capture_free(c);
		return -err;
	}
	c->started = 1;
	pthread_setname_np(c->thread, "nmb-capture");
	*out = c;
	return 0;
}

void nmb_capture_set_filter(struct nmb_capture *c,
			    int (*match)(const void *, const uint8_t *, uint32_t, uint32_t),
			    const void *filter)
{
	c->match = match;
	c->filter = filter;
}

int nmb_capture_error(const struct nmb_capture *c)
{
	return atomic_load(&((struct nmb_capture *)c)->failed);
}

void nmb_capture_counts(const struct nmb_capture *c, struct nmb_capture_counts *out)
{
	struct nmb_capture *m = (struct nmb_capture *)c;

	out->written = atomic_load(&m->written);
	out->lost = atomic_load(&m->lost);
	out->files = atomic_load(&m->opened);
	out->error = atomic_load(&m->failed);
	out->file = atomic_load(&m->file);
}

int nmb_capture_close(struct nmb_capture *c)
{
	if (c->started) {
		atomic_store_explicit(&c->stop, 1, memory_order_release);
		ring_doorbell(c);
		pthread_join(c->thread, NULL);
		c->started = 0;
		/* what the ring still holds (the producer has stopped: head is final) */
		write_runs(c, atomic_load(&c->tail),
			   atomic_load_explicit(&c->head, memory_order_acquire), NULL);
	}
	if (c->fd >= 0) {
		if (close(c->fd) < 0 && errno != EINTR)
			fail(c, errno);
		c->fd = -1;
	}
	return -atomic_load(&c->failed);
}
