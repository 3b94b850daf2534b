/*
 * fakenetmap: an LD_PRELOAD shim that plays the netmap kernel module for one
 * process, so that nmbridge's real kernel-port code (open, NIOCCTRL register,
 * mmap, ring walking, NIOC*SYNC, poll) can be tested on a machine without
 * netmap. It follows the records in shared/netmap-golden/kernel/ and
 * shared/netmap-abi.md; tests/fakenetmap/README.md says what it models.
 *
 * Only open()/openat() of the path in FAKENETMAP_PATH give a fake netmap fd;
 * ioctl, mmap, poll and close on those fds are served here, everything else
 * goes to the real libc (dlsym(RTLD_NEXT)).
 *
 * Environment:
 *   FAKENETMAP_PATH         the path that opens the fake device (required)
 *   FAKENETMAP_NICS         fake NICs: "fk0,fk1/2" (name[/rings per direction])
 *   FAKENETMAP_LEGACY_API   N: behave as a module of API N without NIOCCTRL
 *   FAKENETMAP_LINK_SYSFS   1: a fake NIC's link also follows the real
 *                           interface of the same name (/sys/class/net)
 *   FAKENETMAP_LINK_DOWN    NICs whose link starts down: "fk0,fk1"
 *   FAKENETMAP_NATIVE       NICs played as native drivers: "fk0/64,fk1"
 *                           (name[/TX ring slots]); see txsync()
 *   FAKENETMAP_DOWN_BLOCK_MS  bound on a call blocked by link down (5000)
 *   FAKENETMAP_LOG          file to append event lines to
 *   FAKENETMAP_CTL          unix socket path for the control protocol
 *
 * Build: gcc -shared -fPIC -O1 -Wall -I nmbridge/_ffi/src -o libfakenetmap.so
 *        fakenetmap.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "abi.h"

#define FK_API NETMAP_API
#define FK_SLOTS 1024u
#define FK_BUFSZ 2048u
#define FK_IFSZ 1024u
#define FK_RINGSZ 20480u
#define FK_MAX_FDS 65536
#define FK_MAX_NICS 16
#define FK_MAX_RINGS 8 /* NIC rings or host rings per direction */
#define FK_MAX_PORTS 32 /* ports of one VALE switch */
#define FK_QCAP 4096u
#define FK_MAX_FRAME (NETMAP_MAX_FRAGS * FK_BUFSZ)
#define FK_VALE_RX_FLAGS 0x100 /* one fragment, as VALE reports it (recorded) */

#define FK_NIC 1
#define FK_PIPE 2
#define FK_VALE 3

#ifndef NETMAP_REQ_OPT_EXTMEM
#define NETMAP_REQ_OPT_EXTMEM 1
#endif

/* ------------------------------------------------------------ real libc */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_close)(int);

static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

static void resolve_now(void)
{
	real_open = dlsym(RTLD_NEXT, "open");
	real_open64 = dlsym(RTLD_NEXT, "open64");
	real_openat = dlsym(RTLD_NEXT, "openat");
	real_openat64 = dlsym(RTLD_NEXT, "openat64");
	real_ioctl = dlsym(RTLD_NEXT, "ioctl");
	real_mmap = dlsym(RTLD_NEXT, "mmap");
	real_mmap64 = dlsym(RTLD_NEXT, "mmap64");
	real_munmap = dlsym(RTLD_NEXT, "munmap");
	real_poll = dlsym(RTLD_NEXT, "poll");
	real_close = dlsym(RTLD_NEXT, "close");
	if (real_open64 == NULL)
		real_open64 = real_open;
	if (real_openat64 == NULL)
		real_openat64 = real_openat;
	if (real_mmap64 == NULL)
		real_mmap64 = real_mmap;
}

static void resolve(void)
{
	pthread_once(&resolve_once, resolve_now);
}

/* ------------------------------------------------------------ state */

struct fk_frame {
	uint32_t len;
	unsigned char *data;
};

struct fk_q {
	struct fk_frame f[FK_QCAP];
	uint32_t head, count;
	uint64_t drops;
};

struct fk_mem {
	uint16_t id;
	int priv;        /* NI_PRIV_MEM */
	int memfd;
	char *base;      /* the shim's own mapping */
	uint64_t size;
	uint32_t nif, nring, nbuf;
	uint64_t if_ofs, ring_ofs, buf_ofs;
	uint8_t *if_used, *ring_used, *buf_used;
	int adapters;    /* adapters whose rings live here */
	int pipes;       /* pipe rings live here: buffers are mirrored, no audit */
	struct fk_mem *next;
};

struct fk_adapter;

struct fk_kring {
	struct fk_adapter *na;
	int tx, host;
	uint32_t idx;              /* among the NIC rings or among the host rings */
	uint16_t ringid;
	uint32_t ring_slot;
	struct netmap_ring *ring;  /* in the shim's mapping */
	uint32_t n;
	uint32_t hwcur, hwtail, rhead, rcur, rtail;
	int users, excl;
	struct fk_kring *pipe;     /* pipes: the other end's ring of the opposite direction */
};

struct fk_nic;
struct fk_switch;

struct fk_adapter {
	int kind;
	char name[NETMAP_REQ_IFNAMSIZ];
	struct fk_mem *mem;
	int fds;                  /* registered file descriptors */
	uint32_t ntx, nrx, nhtx, nhrx;
	struct fk_kring *tx, *rx; /* NIC rings, then host rings */
	struct fk_nic *nic;
	struct fk_switch *sw;
	struct fk_adapter *peer;  /* pipes: the other end */
	int master;               /* pipes: this is NAME{ID */
	uint32_t hdr_len;         /* VALE: virtio-net header bytes (NETMAP_REQ_PORT_HDR_SET) */
	struct fk_adapter *next;
};

struct fk_nic {
	char name[NM_IFNAMSIZ];
	uint32_t nrings;
	int ctl_up;
	struct fk_adapter *na;     /* set while the NIC is in netmap mode */
	struct fk_q rxq[FK_MAX_RINGS]; /* wire -> NIC RX rings, imported at rxsync */
	struct fk_q hostq;         /* host stack -> host RX ring */
	struct fk_q wire_out;      /* what the NIC put on the wire (the test reads it) */
	struct fk_q stack_in;      /* what reached the host stack (the test reads it) */
	uint32_t rr;               /* spreads wire frames over the RX rings */
	int native;                /* a native driver's TX reclaim, not the generic adapter's */
	uint32_t tx_slots;         /* slots of its NIC TX rings */
	double down_since;
	int was_up;
};

struct fk_switch {
	char name[NETMAP_REQ_IFNAMSIZ];
	struct fk_adapter *port[FK_MAX_PORTS];
	struct fk_switch *next;
};

#define FK_MAX_BOUND (2 * FK_MAX_RINGS)

struct fk_priv {
	int fd;
	struct fk_adapter *na;
	uint32_t if_slot;
	struct netmap_if *nifp;
	uint64_t nifp_ofs;
	struct fk_kring *btx[FK_MAX_BOUND], *brx[FK_MAX_BOUND];
	uint32_t nbtx, nbrx;
	int txpoll;
};

struct fk_map {
	void *addr;
	size_t len;
	struct fk_map *next;
};

struct fk_waiter {
	int efd;
	struct fk_waiter *next;
};

static pthread_mutex_t G = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t G_cond = PTHREAD_COND_INITIALIZER; /* queues the test reads */
static struct fk_priv *fds[FK_MAX_FDS];
static struct fk_mem *mems;
static struct fk_adapter *adapters;
static struct fk_switch *switches;
static struct fk_nic nics[FK_MAX_NICS];
static int nnics;
static struct fk_map *maps;
static struct fk_waiter *waiters;
static int drain_ms; /* FAKENETMAP_DRAIN_MS (see fk_fini) */
static __thread struct fk_waiter my_waiter = {-1, NULL};

static char fake_path[4096];
static int legacy_api;
static int link_sysfs;
static int down_block_ms = 5000;
static char log_path[4096];
static char ctl_path[108];
static int ctl_started;

static struct {
	long long opens, registers, register_errors, txsyncs, rxsyncs, polls, reinits;
	long long tail_restored, bad_slots, link_blocks, link_block_timeouts, mmaps, munmaps;
	long long wire_tx, wire_rx, host_tx, host_rx, vale_drops, pipe_frames, audit_errors;
	long long closes, port_hdr_sets, vale_hdr_drops, vale_gso_drops;
} st;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void fk_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n, fd;

	if (log_path[0] == 0)
		return;
	n = snprintf(line, sizeof(line), "t=%.6f pid=%d ", now_s(), (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	fd = real_open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) < 0) {
		/* nothing to do: the log is best effort */
	}
	real_close(fd);
}

/* ------------------------------------------------------------ wakeups */

static void notify_all(void)
{
	uint64_t one = 1;

	for (struct fk_waiter *w = waiters; w; w = w->next)
		if (write(w->efd, &one, sizeof(one)) < 0) {
			/* the counter is saturated: the waiter wakes anyway */
		}
	pthread_cond_broadcast(&G_cond);
}

static void waiter_add(struct fk_waiter *w)
{
	w->next = waiters;
	waiters = w;
}

static void waiter_del(struct fk_waiter *w)
{
	for (struct fk_waiter **pp = &waiters; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			return;
		}
}

/* ------------------------------------------------------------ frame queues */

static int q_push(struct fk_q *q, const void *data, uint32_t len)
{
	struct fk_frame *f;

	if (q->count == FK_QCAP) {
		q->drops++;
		return -ENOBUFS;
	}
	f = &q->f[(q->head + q->count) % FK_QCAP];
	f->data = malloc(len ? len : 1);
	if (f->data == NULL) {
		q->drops++;
		return -ENOMEM;
	}
	memcpy(f->data, data, len);
	f->len = len;
	q->count++;
	return 0;
}

static struct fk_frame *q_peek(struct fk_q *q)
{
	return q->count ? &q->f[q->head] : NULL;
}

static void q_drop_head(struct fk_q *q)
{
	free(q->f[q->head].data);
	q->f[q->head].data = NULL;
	q->head = (q->head + 1) % FK_QCAP;
	q->count--;
}

static void q_clear(struct fk_q *q)
{
	while (q->count)
		q_drop_head(q);
}

/* ------------------------------------------------------------ memory regions */

static uint64_t align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static struct fk_mem *mem_find(uint16_t id)
{
	for (struct fk_mem *m = mems; m; m = m->next)
		if (m->id == id)
			return m;
	return NULL;
}

static struct fk_mem *mem_new(uint16_t id, uint32_t nif, uint32_t nring, int priv)
{
	struct fk_mem *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	if (id == 0) {
		id = 2; /* 1 is the global allocator of the NICs */
		while (mem_find(id))
			id++;
	}
	m->id = id;
	m->priv = priv;
	m->nif = nif;
	m->nring = nring;
	m->nbuf = 2 + nring * FK_SLOTS; /* buffers 0 and 1 are reserved */
	m->if_ofs = 0;
	m->ring_ofs = align_up((uint64_t)nif * FK_IFSZ, 4096);
	m->buf_ofs = align_up(m->ring_ofs + (uint64_t)nring * FK_RINGSZ, 4096);
	m->size = m->buf_ofs + (uint64_t)m->nbuf * FK_BUFSZ;
	m->if_used = calloc(nif, 1);
	m->ring_used = calloc(nring, 1);
	m->buf_used = calloc(m->nbuf, 1);
	m->memfd = memfd_create("fakenetmap", MFD_CLOEXEC);
	if (m->memfd < 0 || ftruncate(m->memfd, (off_t)m->size) < 0 || !m->if_used ||
	    !m->ring_used || !m->buf_used)
		goto fail;
	m->base = real_mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, m->memfd, 0);
	if (m->base == MAP_FAILED)
		goto fail;
	m->buf_used[0] = m->buf_used[1] = 1;
	m->next = mems;
	mems = m;
	return m;
fail:
	if (m->memfd >= 0)
		real_close(m->memfd);
	free(m->if_used);
	free(m->ring_used);
	free(m->buf_used);
	free(m);
	return NULL;
}

static void mem_put(struct fk_mem *m)
{
	if (--m->adapters > 0 || !m->priv)
		return;
	for (struct fk_mem **pp = &mems; *pp; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	real_munmap(m->base, m->size);
	real_close(m->memfd); /* the application's mappings keep the memory alive */
	free(m->if_used);
	free(m->ring_used);
	free(m->buf_used);
	free(m);
}

static struct fk_mem *global_mem(void)
{
	struct fk_mem *m = mem_find(1);

	return m ? m : mem_new(1, 64, 64, 0);
}

static char *buf_addr(struct fk_mem *m, uint32_t idx)
{
	return m->base + m->buf_ofs + (uint64_t)idx * FK_BUFSZ;
}

static int buf_ok(struct fk_mem *m, uint32_t idx)
{
	return idx >= 2 && idx < m->nbuf;
}

/* the slots of a ring: 1024, but a native NIC's TX rings have the size it was given */
static uint32_t ring_slots(const struct fk_kring *k)
{
	const struct fk_nic *nic = k->na->kind == FK_NIC ? k->na->nic : NULL;

	return nic && nic->native && k->tx && !k->host ? nic->tx_slots : FK_SLOTS;
}

/* a fresh ring, as recorded: TX head=cur=0 tail=n-1; RX all 0; len = buffer size */
static int ring_new(struct fk_kring *k, struct fk_mem *m, const struct fk_kring *mirror)
{
	struct netmap_ring *r;
	uint32_t s, b = 2, n = ring_slots(k);

	for (s = 0; s < m->nring && m->ring_used[s]; s++)
		;
	if (s == m->nring)
		return -ENOMEM;
	if (mirror == NULL) {
		uint32_t free_bufs = 0;
		for (uint32_t i = 2; i < m->nbuf; i++)
			free_bufs += !m->buf_used[i];
		if (free_bufs < n)
			return -ENOMEM;
	}
	m->ring_used[s] = 1;
	k->ring_slot = s;
	r = (struct netmap_ring *)(m->base + m->ring_ofs + (uint64_t)s * FK_RINGSZ);
	memset(r, 0, sizeof(*r));
	k->ring = r;
	k->n = n;
	r->buf_ofs = (int64_t)(m->buf_ofs - (m->ring_ofs + (uint64_t)s * FK_RINGSZ));
	r->num_slots = n;
	r->nr_buf_size = FK_BUFSZ;
	r->ringid = k->ringid;
	r->dir = k->tx ? 1 : 0; /* 1 for TX, as the kernel sets it (recorded) */
	r->head = r->cur = 0;
	r->tail = k->tx ? n - 1 : 0;
	for (uint32_t i = 0; i < n; i++) {
		if (mirror) {
			r->slot[i].buf_idx = mirror->ring->slot[i].buf_idx;
		} else {
			while (m->buf_used[b])
				b++;
			m->buf_used[b] = 1;
			r->slot[i].buf_idx = b;
		}
		r->slot[i].len = FK_BUFSZ;
		r->slot[i].flags = 0;
		r->slot[i].ptr = 0;
	}
	k->hwcur = k->rhead = k->rcur = 0;
	k->hwtail = k->rtail = r->tail;
	return 0;
}

static void ring_free(struct fk_kring *k, struct fk_mem *m)
{
	if (k->ring == NULL)
		return;
	for (uint32_t i = 0; i < k->n; i++) {
		uint32_t idx = k->ring->slot[i].buf_idx;
		if (buf_ok(m, idx))
			m->buf_used[idx] = 0;
	}
	m->ring_used[k->ring_slot] = 0;
	k->ring = NULL;
}

/* every buffer referenced once, and only buffers of the pool (not for pipes) */
static int mem_audit(struct fk_mem *m, const char *when)
{
	uint8_t *seen;
	int errors = 0;

	if (m->pipes)
		return 0;
	seen = calloc(m->nbuf, 1);
	if (seen == NULL)
		return 0;
	for (struct fk_adapter *na = adapters; na; na = na->next) {
		if (na->mem != m)
			continue;
		for (int d = 0; d < 2; d++) {
			uint32_t cnt = d ? na->nrx + na->nhrx : na->ntx + na->nhtx;
			struct fk_kring *ks = d ? na->rx : na->tx;
			for (uint32_t r = 0; r < cnt; r++) {
				if (ks[r].ring == NULL)
					continue;
				for (uint32_t i = 0; i < ks[r].n; i++) {
					uint32_t idx = ks[r].ring->slot[i].buf_idx;
					if (!buf_ok(m, idx) || seen[idx]++) {
						if (errors < 5)
							fk_log("audit mem=%u when=%s adapter=%s ring=%s%u "
							       "slot=%u buf_idx=%u problem=%s",
							       m->id, when, na->name, d ? "rx" : "tx", r, i,
							       idx, buf_ok(m, idx) ? "duplicate" : "out-of-range");
						errors++;
					}
				}
			}
		}
	}
	free(seen);
	st.audit_errors += errors;
	return errors;
}

/* ------------------------------------------------------------ NICs */

static struct fk_nic *nic_find(const char *name)
{
	for (int i = 0; i < nnics; i++)
		if (strcmp(nics[i].name, name) == 0)
			return &nics[i];
	return NULL;
}

static int sysfs_read(const char *ifname, const char *attr, char *out, size_t cap)
{
	char path[256];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/class/net/%s/%s", ifname, attr);
	fd = real_open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, out, cap - 1);
	real_close(fd);
	if (n < 0)
		return -1;
	out[n] = 0;
	return 0;
}

static int nic_link_up(struct fk_nic *nic)
{
	int up = nic->ctl_up;

	if (up && link_sysfs) {
		char flags[64], carrier[16];
		if (sysfs_read(nic->name, "flags", flags, sizeof(flags)) == 0) {
			if (!(strtoul(flags, NULL, 0) & 1))
				up = 0;
			else if (sysfs_read(nic->name, "carrier", carrier, sizeof(carrier)) < 0 ||
				 carrier[0] != '1')
				up = 0;
		}
	}
	if (!up && nic->was_up)
		nic->down_since = now_s();
	nic->was_up = up;
	return up;
}

/* the host stack sends a frame: to the host RX ring in netmap mode, else to the wire */
static int nic_stack_xmit(struct fk_nic *nic, const void *data, uint32_t len)
{
	if (nic->na)
		return q_push(&nic->hostq, data, len);
	if (!nic_link_up(nic))
		return -ENETDOWN;
	return q_push(&nic->wire_out, data, len);
}

/* a frame arrives from the wire: to an RX ring in netmap mode, else to the stack */
static int nic_wire_recv(struct fk_nic *nic, const void *data, uint32_t len)
{
	if (!nic_link_up(nic))
		return -ENETDOWN;
	if (nic->na) {
		struct fk_q *q = &nic->rxq[nic->rr++ % nic->nrings];
		return q_push(q, data, len);
	}
	return q_push(&nic->stack_in, data, len);
}

/* ------------------------------------------------------------ adapters */

static struct fk_adapter *adapter_find(const char *name)
{
	for (struct fk_adapter *na = adapters; na; na = na->next)
		if (strcmp(na->name, name) == 0)
			return na;
	return NULL;
}

static struct fk_adapter *adapter_alloc(int kind, const char *name, struct fk_mem *m,
					 uint32_t ntx, uint32_t nrx, uint32_t nhtx, uint32_t nhrx)
{
	struct fk_adapter *na = calloc(1, sizeof(*na));

	if (na == NULL)
		return NULL;
	na->kind = kind;
	snprintf(na->name, sizeof(na->name), "%s", name);
	na->mem = m;
	na->ntx = ntx;
	na->nrx = nrx;
	na->nhtx = nhtx;
	na->nhrx = nhrx;
	na->tx = calloc(ntx + nhtx, sizeof(struct fk_kring));
	na->rx = calloc(nrx + nhrx, sizeof(struct fk_kring));
	if (!na->tx || !na->rx) {
		free(na->tx);
		free(na->rx);
		free(na);
		return NULL;
	}
	for (int d = 0; d < 2; d++) {
		uint32_t nic = d ? nrx : ntx, host = d ? nhrx : nhtx;
		struct fk_kring *ks = d ? na->rx : na->tx;
		for (uint32_t i = 0; i < nic + host; i++) {
			ks[i].na = na;
			ks[i].tx = !d;
			ks[i].host = i >= nic;
			ks[i].idx = i >= nic ? i - nic : i;
			ks[i].ringid = (uint16_t)i; /* host rings: NIC ring count + index */
		}
	}
	m->adapters++;
	return na;
}

static void adapter_link(struct fk_adapter *na)
{
	na->next = adapters;
	adapters = na;
}

static void adapter_free(struct fk_adapter *na)
{
	struct fk_mem *m = na->mem;

	for (struct fk_adapter **pp = &adapters; *pp; pp = &(*pp)->next)
		if (*pp == na) {
			*pp = na->next;
			break;
		}
	for (uint32_t i = 0; i < na->ntx + na->nhtx; i++)
		ring_free(&na->tx[i], m);
	for (uint32_t i = 0; i < na->nrx + na->nhrx; i++)
		ring_free(&na->rx[i], m);
	free(na->tx);
	free(na->rx);
	free(na);
	mem_put(m);
}

/* rings of a new NIC adapter, RX before TX as the records number the buffers */
static int adapter_rings(struct fk_adapter *na)
{
	int rc;

	for (uint32_t i = 0; i < na->nrx + na->nhrx; i++)
		if ((rc = ring_new(&na->rx[i], na->mem, NULL)) < 0)
			return rc;
	for (uint32_t i = 0; i < na->ntx + na->nhtx; i++)
		if ((rc = ring_new(&na->tx[i], na->mem, NULL)) < 0)
			return rc;
	return 0;
}

static struct fk_adapter *nic_adapter_new(struct fk_nic *nic, struct fk_mem *m,
					   const struct nmreq_register *req, int *err)
{
	uint32_t htx = req && req->nr_host_tx_rings ? req->nr_host_tx_rings : 1;
	uint32_t hrx = req && req->nr_host_rx_rings ? req->nr_host_rx_rings : 1;
	struct fk_adapter *na;

	if (htx > FK_MAX_RINGS)
		htx = FK_MAX_RINGS;
	if (hrx > FK_MAX_RINGS)
		hrx = FK_MAX_RINGS;
	na = adapter_alloc(FK_NIC, nic->name, m, nic->nrings, nic->nrings, htx, hrx);
	if (na == NULL) {
		*err = ENOMEM;
		return NULL;
	}
	na->nic = nic;
	if ((*err = -adapter_rings(na)) != 0) {
		adapter_free(na);
		return NULL;
	}
	adapter_link(na);
	nic->na = na; /* the whole interface is in netmap mode (generic adapter) */
	fk_log("adapter-created name=%s kind=nic mem=%u host_rings=%u/%u", na->name, m->id, htx,
	       hrx);
	return na;
}

static void switch_detach(struct fk_adapter *na)
{
	struct fk_switch *sw = na->sw;
	int left = 0;

	for (int i = 0; i < FK_MAX_PORTS; i++) {
		if (sw->port[i] == na)
			sw->port[i] = NULL;
		left += sw->port[i] != NULL;
	}
	if (left)
		return;
	for (struct fk_switch **pp = &switches; *pp; pp = &(*pp)->next)
		if (*pp == sw) {
			*pp = sw->next;
			break;
		}
	free(sw);
}

/* the last fd of an adapter went away: the adapter is destroyed (recorded for NICs) */
static void adapter_release(struct fk_adapter *na)
{
	if (na->fds > 0)
		return;
	if (na->kind == FK_PIPE) {
		struct fk_adapter *peer = na->peer;
		if (peer && peer->fds > 0)
			return; /* the pair lives while either end is open */
		na->mem->pipes--;
		if (peer) {
			peer->peer = NULL;
			adapter_free(peer);
		}
		adapter_free(na);
		return;
	}
	if (na->kind != FK_PIPE)
		mem_audit(na->mem, "destroy");
	if (na->kind == FK_NIC) {
		struct fk_nic *nic = na->nic;
		for (uint32_t i = 0; i < nic->nrings; i++)
			q_clear(&nic->rxq[i]);
		q_clear(&nic->hostq);
		nic->na = NULL;
	}
	if (na->kind == FK_VALE)
		switch_detach(na);
	fk_log("adapter-destroyed name=%s", na->name);
	adapter_free(na);
}

/* ------------------------------------------------------------ name lookup */

static int is_ident(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return 1;
}

#define NAME_NIC 1
#define NAME_PIPE 2
#define NAME_VALE 3

struct fk_name {
	int kind;
	struct fk_nic *nic;
	char parent[NETMAP_REQ_IFNAMSIZ]; /* pipes */
	int master;
	char sw[NETMAP_REQ_IFNAMSIZ];     /* VALE: the switch, "vale0" */
};

/* what the kernel makes of nr_name: 0 or an errno (as recorded) */
static int name_parse(const char *name, struct fk_name *out)
{
	const char *brace = strpbrk(name, "{}");
	const char *colon = strchr(name, ':');

	memset(out, 0, sizeof(*out));
	if (name[0] == 0)
		return ENXIO;
	if (brace) {
		size_t plen = (size_t)(brace - name);
		if (plen == 0 || brace[1] == 0 || !is_ident(brace + 1, strlen(brace + 1)))
			return ENXIO;
		if (colon && (strncmp(name, "vale", 4) != 0 || colon > brace))
			return ENXIO;
		out->kind = NAME_PIPE;
		memcpy(out->parent, name, plen);
		out->master = *brace == '{';
		return 0;
	}
	if (colon) {
		/* valeID:PORT; anything else with a ':' ("netmap:v0") is not a kernel name */
		size_t swlen = (size_t)(colon - name);
		if (strncmp(name, "vale", 4) != 0 || !is_ident(name + 4, swlen - 4) ||
		    colon[1] == 0 || strchr(colon + 1, ':'))
			return ENXIO;
		out->kind = NAME_VALE;
		memcpy(out->sw, name, swlen);
		return 0;
	}
	if (strcmp(name, "lo") == 0)
		return EINVAL; /* recorded: the loopback interface cannot be put in netmap mode */
	out->nic = nic_find(name);
	if (out->nic == NULL)
		return ENXIO;
	out->kind = NAME_NIC;
	return 0;
}

static struct fk_adapter *pipe_pair_new(const char *name, const struct fk_name *nm,
					 uint16_t mem_id, int *err)
{
	char mname[NETMAP_REQ_IFNAMSIZ], sname[NETMAP_REQ_IFNAMSIZ];
	size_t plen = strlen(nm->parent);
	struct fk_mem *m = NULL;
	struct fk_adapter *ma, *sa;

	/* the two ends' names: the same but for the brace */
	memcpy(mname, name, sizeof(mname));
	memcpy(sname, name, sizeof(sname));
	mname[plen] = '{';
	sname[plen] = '}';
	if (mem_id) {
		m = mem_find(mem_id);
		if (m == NULL) {
			*err = EINVAL;
			return NULL;
		}
	} else if (nic_find(nm->parent)) {
		m = global_mem(); /* pipes of a NIC use the NIC's allocator */
	} else {
		/* pipes of one parent share its region: look for a sibling pipe */
		for (struct fk_adapter *na = adapters; na; na = na->next)
			if (na->kind == FK_PIPE && strncmp(na->name, nm->parent, plen) == 0 &&
			    (na->name[plen] == '{' || na->name[plen] == '}')) {
				m = na->mem;
				break;
			}
		if (m == NULL)
			m = mem_new(0, 16, 16, 1);
	}
	if (m == NULL) {
		*err = ENOMEM;
		return NULL;
	}
	m->adapters++; /* hold it while the pair is built */
	ma = adapter_alloc(FK_PIPE, mname, m, 1, 1, 0, 0);
	sa = adapter_alloc(FK_PIPE, sname, m, 1, 1, 0, 0);
	mem_put(m);
	if (!ma || !sa) {
		if (ma)
			adapter_free(ma);
		if (sa)
			adapter_free(sa);
		*err = ENOMEM;
		return NULL;
	}
	ma->master = 1;
	ma->peer = sa;
	sa->peer = ma;
	/* zero-copy pairs: master TX <-> slave RX and master RX <-> slave TX share slots */
	if ((*err = -ring_new(&ma->rx[0], m, NULL)) != 0 ||
	    (*err = -ring_new(&ma->tx[0], m, NULL)) != 0 ||
	    (*err = -ring_new(&sa->tx[0], m, &ma->rx[0])) != 0 ||
	    (*err = -ring_new(&sa->rx[0], m, &ma->tx[0])) != 0) {
		ma->peer = sa->peer = NULL;
		adapter_free(ma);
		adapter_free(sa);
		return NULL;
	}
	ma->tx[0].pipe = &sa->rx[0];
	sa->rx[0].pipe = &ma->tx[0];
	ma->rx[0].pipe = &sa->tx[0];
	sa->tx[0].pipe = &ma->rx[0];
	m->pipes++;
	adapter_link(ma);
	adapter_link(sa);
	fk_log("adapter-created name=%s kind=pipe mem=%u", name, m->id);
	return nm->master ? ma : sa;
}

static struct fk_adapter *vale_port_new(const char *name, const struct fk_name *nm,
					 uint16_t mem_id, int *err)
{
	struct fk_switch *sw;
	struct fk_adapter *na;
	struct fk_mem *m;
	int slot = -1;

	for (sw = switches; sw; sw = sw->next)
		if (strcmp(sw->name, nm->sw) == 0)
			break;
	if (sw) {
		for (int i = 0; i < FK_MAX_PORTS && slot < 0; i++)
			if (sw->port[i] == NULL)
				slot = i;
		if (slot < 0) {
			*err = ENOMEM;
			return NULL;
		}
	}
	m = mem_id ? mem_find(mem_id) : mem_new(0, 8, 8, 1); /* each port: its own region */
	if (m == NULL) {
		*err = mem_id ? EINVAL : ENOMEM;
		return NULL;
	}
	na = adapter_alloc(FK_VALE, name, m, 1, 1, 0, 0);
	if (na == NULL) {
		*err = ENOMEM;
		m->adapters++;
		mem_put(m);
		return NULL;
	}
	if ((*err = -adapter_rings(na)) != 0) {
		adapter_free(na);
		return NULL;
	}
	if (sw == NULL) {
		sw = calloc(1, sizeof(*sw));
		if (sw == NULL) {
			adapter_free(na);
			*err = ENOMEM;
			return NULL;
		}
		snprintf(sw->name, sizeof(sw->name), "%s", nm->sw);
		sw->next = switches;
		switches = sw;
		slot = 0;
	}
	sw->port[slot] = na;
	na->sw = sw;
	adapter_link(na);
	fk_log("adapter-created name=%s kind=vale mem=%u", name, m->id);
	return na;
}

/* ------------------------------------------------------------ sync */

static uint32_t nm_next(uint32_t i, uint32_t n)
{
	return i + 1 == n ? 0 : i + 1;
}

static uint32_t nm_prev(uint32_t i, uint32_t n)
{
	return i == 0 ? n - 1 : i - 1;
}

static int between(uint32_t a, uint32_t x, uint32_t b)
{
	/* x in [a, b] going forward from a */
	return a <= b ? (x >= a && x <= b) : (x >= a || x <= b);
}

static const char *kname(const struct fk_kring *k)
{
	static __thread char buf[96];

	snprintf(buf, sizeof(buf), "%s/%s%s%u", k->na->name, k->host ? "host-" : "",
		 k->tx ? "tx" : "rx", k->idx);
	return buf;
}

/* nm_txsync_prologue / nm_rxsync_prologue: n if the ring was corrupted */
static uint32_t sync_prologue(struct fk_kring *k)
{
	struct netmap_ring *r = k->ring;
	uint32_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
	uint32_t cur = __atomic_load_n(&r->cur, __ATOMIC_ACQUIRE);
	uint32_t n = k->n;

	if (head >= n || cur >= n)
		return n;
	if (k->tx) {
		if (!between(k->rhead, head, k->rtail) || !between(head, cur, k->rtail))
			return n;
	} else {
		if (!between(k->hwcur, head, k->hwtail) || !between(head, cur, k->hwtail))
			return n;
	}
	if (r->tail != k->rtail) {
		st.tail_restored++;
		fk_log("tail-restored ring=%s tail=%u kernel=%u", kname(k), r->tail, k->rtail);
		r->tail = k->rtail;
	}
	k->rhead = head;
	k->rcur = cur;
	return head;
}

static void ring_reinit(struct fk_kring *k, const char *where)
{
	struct netmap_ring *r = k->ring;

	st.reinits++;
	fk_log("reinit ring=%s where=%s head=%u cur=%u tail=%u hwcur=%u hwtail=%u rhead=%u",
	       kname(k), where, r->head, r->cur, r->tail, k->hwcur, k->hwtail, k->rhead);
	for (uint32_t i = 0; i < k->n; i++) {
		struct netmap_slot *s = &r->slot[i];
		if (!buf_ok(k->na->mem, s->buf_idx) || s->len > FK_BUFSZ) {
			st.bad_slots++;
			s->len = 0;
		}
	}
	r->head = r->cur = k->rhead = k->rcur = k->hwcur;
	r->tail = k->rtail = k->hwtail;
}

static void sync_finalize(struct fk_kring *k)
{
	k->rtail = k->hwtail;
	__atomic_store_n(&k->ring->tail, k->rtail, __ATOMIC_RELEASE);
}

/* one frame's slots from a TX ring, gathered: returns its slot count, 0 if the
 * chain does not end before `end`; *len and data in buf (FK_MAX_FRAME) */
static uint32_t tx_gather(struct fk_kring *k, uint32_t i, uint32_t end, unsigned char *buf,
			  uint32_t *len)
{
	struct fk_mem *m = k->na->mem;
	uint32_t nslots = 0;

	*len = 0;
	while (i != end) {
		struct netmap_slot *s = &k->ring->slot[i];
		uint32_t l = s->len;
		nslots++;
		if (!buf_ok(m, s->buf_idx) || l > FK_BUFSZ) {
			st.bad_slots++;
			fk_log("bad-slot ring=%s slot=%u buf_idx=%u len=%u", kname(k), i, s->buf_idx,
			       l);
			l = 0;
		} else if (*len + l <= FK_MAX_FRAME) {
			memcpy(buf + *len, buf_addr(m, s->buf_idx), l);
			*len += l;
		}
		s->flags &= (uint16_t)~NS_BUF_CHANGED;
		if (!(s->flags & NS_MOREFRAG) || nslots == NETMAP_MAX_FRAGS)
			return nslots;
		i = nm_next(i, k->n);
	}
	return 0;
}

/* free slots the kernel owns in an RX ring: [hwtail, hwcur - 1) */
static uint32_t rx_room(const struct fk_kring *k)
{
	return (k->hwcur + k->n - k->hwtail - 1) % k->n;
}

/* put one frame into an RX ring at hwtail; -1 if there is no room */
static int rx_put(struct fk_kring *k, const unsigned char *data, uint32_t len, uint16_t flags)
{
	struct fk_mem *m = k->na->mem;
	uint32_t need = len ? (len + FK_BUFSZ - 1) / FK_BUFSZ : 1, off = 0;

	if (need > rx_room(k) || need > NETMAP_MAX_FRAGS)
		return -1;
	for (uint32_t j = 0; j < need; j++) {
		struct netmap_slot *s = &k->ring->slot[k->hwtail];
		uint32_t l = len - off > FK_BUFSZ ? FK_BUFSZ : len - off;
		if (buf_ok(m, s->buf_idx)) {
			memcpy(buf_addr(m, s->buf_idx), data + off, l);
		} else {
			st.bad_slots++;
			fk_log("bad-slot ring=%s slot=%u buf_idx=%u (rx)", kname(k), k->hwtail,
			       s->buf_idx);
		}
		s->len = (uint16_t)l;
		s->flags = (uint16_t)(flags | (j + 1 < need ? NS_MOREFRAG : 0));
		off += l;
		k->hwtail = nm_next(k->hwtail, k->n);
	}
	return 0;
}

static unsigned char frame_buf[FK_MAX_FRAME];
static unsigned char vale_buf[FK_MAX_FRAME + 12];

/* the internet checksum of [p, p + n), folded and complemented, in the byte order of p */
static uint16_t csum_fold(const unsigned char *p, uint32_t n)
{
	uint32_t sum = 0;

	for (uint32_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/*
 * One frame from VALE port src to port dst, as nm_bdg_flush and
 * bdg_mismatch_datapath (netmap_offloadings.c) treat the virtio-net headers
 * when the two ports' lengths differ:
 *   src 0,  dst N: N zero bytes in front;
 *   src N,  dst M: the first 10 bytes of src's header, zeros to M;
 *   src N,  dst 0: the header checked (too short, a flag other than
 *                  NEEDS_CSUM/DATA_VALID, a gso_type other than NONE, TCPV4,
 *                  UDP, TCPV6 (ECN bit aside): dropped, no word said), the
 *                  checksum NEEDS_CSUM asks for completed, the header cut off.
 * A super-frame (gso_type not NONE) into a port without headers is segmented
 * by the module; the fake does not model that: it drops it and counts it.
 */
static void vale_deliver(struct fk_adapter *src, struct fk_adapter *dst,
			 const unsigned char *f, uint32_t len)
{
	uint32_t sh = src->hdr_len, dh = dst->hdr_len, out = len;
	const unsigned char *data = f;

	if (sh != dh) {
		if (sh && !dh) {
			const unsigned char *vh = f;
			uint8_t gso = vh[1] & (uint8_t)~0x80;
			if (len < sh || (vh[0] & ~(1 | 2)) || (gso != 0 && gso != 1 && gso != 3 &&
								gso != 4)) {
				st.vale_hdr_drops++;
				fk_log("vale-drop from=%s to=%s why=header", src->name, dst->name);
				return;
			}
			if (gso != 0) {
				st.vale_gso_drops++;
				fk_log("vale-drop from=%s to=%s why=gso-not-modelled", src->name,
				       dst->name);
				return;
			}
			out = len - sh;
			memcpy(vale_buf, f + sh, out);
			if (vh[0] & 1) { /* NEEDS_CSUM; 16-bit fields little-endian */
				uint32_t start = (uint32_t)(vh[6] | vh[7] << 8);
				uint32_t off = (uint32_t)(vh[8] | vh[9] << 8);
				if (start + off + 2 <= out && start < out) {
					uint16_t c = csum_fold(vale_buf + start, out - start);
					vale_buf[start + off] = (unsigned char)(c >> 8);
					vale_buf[start + off + 1] = (unsigned char)c;
				} else {
					fk_log("vale-csum from=%s invalid start=%u offset=%u len=%u",
					       src->name, start, off, out);
				}
			}
		} else {
			memset(vale_buf, 0, dh);
			if (sh && len < sh) {
				st.vale_hdr_drops++;
				return;
			}
			if (sh)
				memcpy(vale_buf, f, 10);
			memcpy(vale_buf + dh, f + sh, len - sh);
			out = dh + len - sh;
		}
		data = vale_buf;
	}
	if (rx_put(&dst->rx[0], data, out, FK_VALE_RX_FLAGS) < 0)
		st.vale_drops++;
}

/*
 * force: NAF_FORCE_RECLAIM, which NIOCTXSYNC passes and netmap_poll does not.
 * A native driver (ixgbe, i40e, ...) reclaims the slots of finished
 * transmissions only when forced or when user space has no free slot left
 * (nm_kr_txempty: rhead == nr_hwtail); the generic adapter at every sync.
 */
static int txsync(struct fk_kring *k, int force)
{
	struct fk_adapter *na = k->na;
	uint32_t i = k->hwcur, len, ns;
	int changed = 0;

	st.txsyncs++;
	if (na->kind == FK_NIC && !k->host &&
	    (!na->nic->native || force || k->rhead == k->hwtail)) {
		/* completions of earlier syncs are reported now */
		uint32_t t = nm_prev(k->hwcur, k->n);
		changed |= t != k->hwtail;
		k->hwtail = t;
	}
	while (i != k->rhead) {
		if (na->kind == FK_PIPE) {
			struct fk_kring *rx = k->pipe;
			struct netmap_slot *ts = &k->ring->slot[i];
			/* netmap_pipe_txsync: the slot itself moves, buffer index and all */
			rx->ring->slot[i] = *ts;
			ts->flags &= (uint16_t)~NS_BUF_CHANGED;
			i = nm_next(i, k->n);
			if (!(ts->flags & NS_MOREFRAG)) {
				rx->hwtail = i;
				st.pipe_frames++;
			}
			changed = 1;
			continue;
		}
		ns = tx_gather(k, i, k->rhead, frame_buf, &len);
		if (ns == 0)
			break; /* an unfinished chain waits for its last slot */
		i = (i + ns) % k->n;
		changed = 1;
		if (na->kind == FK_NIC && !k->host) {
			st.wire_tx++;
			q_push(&na->nic->wire_out, frame_buf, len);
		} else if (na->kind == FK_NIC) {
			st.host_tx++;
			q_push(&na->nic->stack_in, frame_buf, len);
		} else if (na->kind == FK_VALE) {
			for (int p = 0; p < FK_MAX_PORTS; p++) {
				struct fk_adapter *dst = na->sw->port[p];
				if (dst == NULL || dst == na)
					continue;
				vale_deliver(na, dst, frame_buf, len);
			}
		}
	}
	if (na->kind == FK_PIPE) {
		/* the last complete frame; the TX tail moves when the peer releases */
		k->hwcur = i;
	} else {
		k->hwcur = i;
		if (na->kind != FK_NIC || k->host)
			k->hwtail = nm_prev(k->hwcur, k->n); /* completed at once (recorded) */
	}
	return changed;
}

static int rxsync(struct fk_kring *k)
{
	struct fk_adapter *na = k->na;
	int changed = 0;

	st.rxsyncs++;
	/* release [hwcur, head) */
	if (k->hwcur != k->rhead) {
		if (na->kind == FK_PIPE) {
			struct fk_kring *tx = k->pipe;
			for (uint32_t i = k->hwcur; i != k->rhead; i = nm_next(i, k->n)) {
				struct netmap_slot *rs = &k->ring->slot[i];
				if (rs->flags & NS_BUF_CHANGED) {
					tx->ring->slot[i] = *rs;
					rs->flags &= (uint16_t)~NS_BUF_CHANGED;
				}
			}
			tx->hwtail = nm_prev(k->rhead, k->n);
		}
		k->hwcur = k->rhead;
		changed = 1;
	}
	/* and import what arrived */
	if (na->kind == FK_NIC) {
		struct fk_nic *nic = na->nic;
		struct fk_q *q = k->host ? &nic->hostq : &nic->rxq[k->idx];
		struct fk_frame *f;
		if (k->host && k->idx != 0)
			q = NULL; /* the host stack feeds the first host RX ring */
		while (q && (f = q_peek(q)) != NULL) {
			if (rx_put(k, f->data, f->len, 0) < 0)
				break;
			if (k->host)
				st.host_rx++;
			else
				st.wire_rx++;
			q_drop_head(q);
			changed = 1;
		}
	}
	return changed;
}

/* ------------------------------------------------------------ registration */

static struct fk_priv *priv_of(int fd)
{
	if (fd < 0 || fd >= FK_MAX_FDS)
		return NULL;
	return __atomic_load_n(&fds[fd], __ATOMIC_ACQUIRE);
}

static int bind_add(struct fk_kring **list, uint32_t *n, struct fk_kring *k)
{
	if (*n == FK_MAX_BOUND)
		return -1;
	list[(*n)++] = k;
	return 0;
}

static int do_register(struct fk_priv *p, struct nmreq_header *hdr, struct nmreq_register *req)
{
	char name[NETMAP_REQ_IFNAMSIZ];
	struct fk_name nm;
	struct fk_adapter *na;
	struct fk_kring *btx[FK_MAX_BOUND], *brx[FK_MAX_BOUND];
	uint32_t nbtx = 0, nbrx = 0, ntx, nrx, nhtx, nhrx, count, slot;
	uint32_t mode = req->nr_mode, ringid = req->nr_ringid;
	uint64_t flags = req->nr_flags;
	int err = 0, created = 0;
	struct netmap_if *nifp;
	struct fk_mem *m;

	if (p->na)
		return EBUSY; /* recorded: a second REGISTER on one fd */
	memcpy(name, hdr->nr_name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	if ((err = name_parse(name, &nm)) != 0)
		return err;
	if (mode != NR_REG_ALL_NIC && mode != NR_REG_SW && mode != NR_REG_NIC_SW &&
	    mode != NR_REG_ONE_NIC && mode != NR_REG_ONE_SW)
		return EINVAL; /* NR_REG_DEFAULT, NR_REG_NULL, 99: recorded EINVAL */
	if ((flags & NR_TX_RINGS_ONLY) && (flags & NR_RX_RINGS_ONLY))
		return EINVAL;
	if (flags & (NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON))
		return EOPNOTSUPP; /* monitors are not modelled */
	if (req->nr_mem_id && mem_find(req->nr_mem_id) == NULL)
		return EINVAL;

	na = adapter_find(name);
	if (na && req->nr_mem_id && na->kind != FK_NIC && na->mem->id != req->nr_mem_id)
		return EINVAL;
	if (na == NULL) {
		if (nm.kind == NAME_NIC) {
			m = req->nr_mem_id ? mem_find(req->nr_mem_id) : global_mem();
			na = m ? nic_adapter_new(nm.nic, m, req, &err) : NULL;
			if (m == NULL)
				err = ENOMEM;
		} else if (nm.kind == NAME_PIPE) {
			na = pipe_pair_new(name, &nm, req->nr_mem_id, &err);
		} else {
			na = vale_port_new(name, &nm, req->nr_mem_id, &err);
		}
		if (na == NULL)
			return err ? err : ENOMEM;
		created = 1;
	}
	if (na->hdr_len && !(flags & NR_ACCEPT_VNET_HDR)) {
		err = EIO; /* netmap_ioctl: "virt_hdr_len=%d, but application does not accept it" */
		goto fail;
	}
	m = na->mem;
	ntx = na->ntx;
	nrx = na->nrx;
	nhtx = na->nhtx;
	nhrx = na->nhrx;

	/* which rings: netmap_interp_ringid */
	switch (mode) {
	case NR_REG_ALL_NIC:
		for (uint32_t i = 0; i < ntx; i++)
			bind_add(btx, &nbtx, &na->tx[i]);
		for (uint32_t i = 0; i < nrx; i++)
			bind_add(brx, &nbrx, &na->rx[i]);
		break;
	case NR_REG_SW:
	case NR_REG_NIC_SW:
		if (na->kind != FK_NIC) {
			err = EINVAL; /* no host rings on pipes and VALE ports */
			goto fail;
		}
		if (mode == NR_REG_NIC_SW) {
			for (uint32_t i = 0; i < ntx; i++)
				bind_add(btx, &nbtx, &na->tx[i]);
		}
		for (uint32_t i = 0; i < nhtx; i++)
			bind_add(btx, &nbtx, &na->tx[ntx + i]);
		if (mode == NR_REG_NIC_SW) {
			for (uint32_t i = 0; i < nrx; i++)
				bind_add(brx, &nbrx, &na->rx[i]);
		}
		for (uint32_t i = 0; i < nhrx; i++)
			bind_add(brx, &nbrx, &na->rx[nrx + i]);
		break;
	case NR_REG_ONE_NIC:
		if (ringid >= ntx && ringid >= nrx) {
			err = EINVAL; /* recorded: a ring that does not exist */
			goto fail;
		}
		if (ringid < ntx)
			bind_add(btx, &nbtx, &na->tx[ringid]);
		if (ringid < nrx)
			bind_add(brx, &nbrx, &na->rx[ringid]);
		break;
	case NR_REG_ONE_SW:
		if (na->kind != FK_NIC || (ringid >= nhtx && ringid >= nhrx)) {
			err = EINVAL;
			goto fail;
		}
		if (ringid < nhtx)
			bind_add(btx, &nbtx, &na->tx[ntx + ringid]);
		if (ringid < nhrx)
			bind_add(brx, &nbrx, &na->rx[nrx + ringid]);
		break;
	}
	if (flags & NR_TX_RINGS_ONLY)
		nbrx = 0;
	if (flags & NR_RX_RINGS_ONLY)
		nbtx = 0;
	/* NR_EXCLUSIVE: per ring, both ways (recorded) */
	for (int d = 0; d < 2; d++) {
		struct fk_kring **l = d ? brx : btx;
		uint32_t n = d ? nbrx : nbtx;
		for (uint32_t i = 0; i < n; i++)
			if (l[i]->excl || ((flags & NR_EXCLUSIVE) && l[i]->users)) {
				err = EBUSY;
				goto fail;
			}
	}
	/* a netmap_if for this fd */
	for (slot = 0; slot < m->nif && m->if_used[slot]; slot++)
		;
	if (slot == m->nif) {
		err = ENOMEM;
		goto fail;
	}
	m->if_used[slot] = 1;
	nifp = (struct netmap_if *)(m->base + m->if_ofs + (uint64_t)slot * FK_IFSZ);
	memset(nifp, 0, FK_IFSZ);
	memcpy(nifp->ni_name, na->name, strnlen(na->name, sizeof(nifp->ni_name) - 1));
	nifp->ni_version = 0; /* as recorded */
	nifp->ni_flags = m->priv ? NI_PRIV_MEM : 0;
	nifp->ni_tx_rings = ntx;
	nifp->ni_rx_rings = nrx;
	nifp->ni_bufs_head = 0;
	/* pipes and VALE ports: 1 and 1 in the netmap_if, 0 in the reply (recorded) */
	nifp->ni_host_tx_rings = na->kind == FK_NIC ? nhtx : 1;
	nifp->ni_host_rx_rings = na->kind == FK_NIC ? nhrx : 1;
	count = ntx + nifp->ni_host_tx_rings + nrx + nifp->ni_host_rx_rings;
	if (sizeof(*nifp) + count * sizeof(ssize_t) > FK_IFSZ) {
		m->if_used[slot] = 0;
		err = ENOMEM;
		goto fail;
	}
	for (int d = 0; d < 2; d++) {
		struct fk_kring **l = d ? brx : btx;
		uint32_t n = d ? nbrx : nbtx;
		uint32_t base = d ? ntx + nifp->ni_host_tx_rings : 0;
		uint32_t nic = d ? nrx : ntx;
		for (uint32_t i = 0; i < n; i++) {
			struct fk_kring *k = l[i];
			uint32_t pos = base + (k->host ? nic + k->idx : k->idx);
			nifp->ring_ofs[pos] = (char *)k->ring - (char *)nifp;
			k->users++;
			if (flags & NR_EXCLUSIVE)
				k->excl = 1;
		}
	}
	p->na = na;
	na->fds++;
	p->if_slot = slot;
	p->nifp = nifp;
	p->nifp_ofs = m->if_ofs + (uint64_t)slot * FK_IFSZ;
	memcpy(p->btx, btx, sizeof(btx[0]) * nbtx);
	memcpy(p->brx, brx, sizeof(brx[0]) * nbrx);
	p->nbtx = nbtx;
	p->nbrx = nbrx;
	p->txpoll = !(flags & NR_NO_TX_POLL);

	req->nr_offset = p->nifp_ofs;
	req->nr_memsize = m->size;
	req->nr_tx_slots = na->kind == FK_NIC && na->nic->native ? na->nic->tx_slots : FK_SLOTS;
	req->nr_rx_slots = FK_SLOTS;
	req->nr_tx_rings = (uint16_t)ntx;
	req->nr_rx_rings = (uint16_t)nrx;
	req->nr_host_tx_rings = (uint16_t)(na->kind == FK_NIC ? nhtx : 0);
	req->nr_host_rx_rings = (uint16_t)(na->kind == FK_NIC ? nhrx : 0);
	req->nr_mem_id = m->id;
	req->nr_extra_bufs = 0;
	st.registers++;
	fk_log("register fd=%d name=%s mode=%u ringid=%u flags=0x%llx mem=%u offset=%llu "
	       "tx=%u rx=%u hdr_len=%u",
	       p->fd, name, mode, ringid, (unsigned long long)flags, m->id,
	       (unsigned long long)p->nifp_ofs, nbtx, nbrx, na->hdr_len);
	return 0;
fail:
	if (created)
		adapter_release(na);
	return err;
}

static void do_unregister(struct fk_priv *p)
{
	struct fk_adapter *na = p->na;

	if (na == NULL)
		return;
	for (uint32_t i = 0; i < p->nbtx; i++) {
		p->btx[i]->users--;
		p->btx[i]->excl = 0;
	}
	for (uint32_t i = 0; i < p->nbrx; i++) {
		p->brx[i]->users--;
		p->brx[i]->excl = 0;
	}
	na->mem->if_used[p->if_slot] = 0;
	p->na = NULL;
	na->fds--;
	adapter_release(na);
	notify_all();
}

static int do_port_info(struct nmreq_header *hdr, struct nmreq_port_info_get *pi)
{
	char name[NETMAP_REQ_IFNAMSIZ];
	struct fk_name nm;
	struct fk_adapter *na;
	struct fk_mem *m;
	int err;

	memcpy(name, hdr->nr_name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	if ((err = name_parse(name, &nm)) != 0)
		return err;
	na = adapter_find(name);
	if (na == NULL && nm.kind != NAME_NIC)
		return ENXIO; /* not modelled: a pipe or VALE port nobody has open */
	m = na ? na->mem : global_mem();
	if (m == NULL)
		return ENOMEM;
	pi->nr_memsize = m->size;
	pi->nr_tx_slots = pi->nr_rx_slots = FK_SLOTS;
	if (nm.kind == NAME_NIC && nm.nic->native)
		pi->nr_tx_slots = nm.nic->tx_slots;
	pi->nr_tx_rings = (uint16_t)(na ? na->ntx : nm.nic->nrings);
	pi->nr_rx_rings = (uint16_t)(na ? na->nrx : nm.nic->nrings);
	pi->nr_host_tx_rings = (uint16_t)(na ? (na->kind == FK_NIC ? na->nhtx : 0) : 1);
	pi->nr_host_rx_rings = (uint16_t)(na ? (na->kind == FK_NIC ? na->nhrx : 0) : 1);
	pi->nr_mem_id = m->id;
	return 0;
}

/*
 * NETMAP_REQ_PORT_HDR_SET, as netmap_ioctl serves it: the length first (0, 10
 * or 12, else EINVAL), then the port, looked up by name on its switch without
 * creating anything (netmap_get_vale_na, create 0): a name that does not
 * begin with "vale", a switch or a port that does not exist, is ENXIO. Any fd,
 * bound or not; the port may be in use. No other check.
 */
static int do_port_hdr_set(struct fk_priv *p, struct nmreq_header *hdr,
			   struct nmreq_port_hdr *req)
{
	char name[NETMAP_REQ_IFNAMSIZ];
	struct fk_adapter *na;

	if (req->nr_hdr_len != 0 && req->nr_hdr_len != 10 && req->nr_hdr_len != 12)
		return EINVAL;
	memcpy(name, hdr->nr_name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	if (strncmp(name, "vale", 4) != 0)
		return ENXIO; /* no VALE prefix: no adapter, no error, then ENXIO */
	na = adapter_find(name);
	if (na == NULL || na->kind != FK_VALE)
		return ENXIO;
	na->hdr_len = req->nr_hdr_len;
	st.port_hdr_sets++;
	fk_log("port-hdr-set fd=%d name=%s len=%u users=%d", p->fd, name, na->hdr_len, na->fds);
	return 0;
}

/* NETMAP_REQ_PORT_HDR_GET: any port that exists (netmap_get_na, create 0) */
static int do_port_hdr_get(struct nmreq_header *hdr, struct nmreq_port_hdr *req)
{
	char name[NETMAP_REQ_IFNAMSIZ];
	struct fk_name nm;
	struct fk_adapter *na;
	int err;

	memcpy(name, hdr->nr_name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	if ((err = name_parse(name, &nm)) != 0)
		return err;
	na = adapter_find(name);
	if (na == NULL && nm.kind != NAME_NIC)
		return ENXIO;
	req->nr_hdr_len = na ? na->hdr_len : 0;
	return 0;
}

static int do_ctrl(struct fk_priv *p, struct nmreq_header *hdr)
{
	struct nmreq_option *opt;

	if (hdr == NULL)
		return EFAULT;
	if (hdr->nr_version < NETMAP_MIN_API || hdr->nr_version > NETMAP_MAX_API)
		return EINVAL; /* recorded: nr_version is left as sent */
	/* request options: none is modelled (the real module knows EXTMEM, OFFSETS...) */
	opt = (struct nmreq_option *)(uintptr_t)hdr->nr_options;
	if (opt) {
		for (int i = 0; opt && i < 16; i++) {
			opt->nro_status = EOPNOTSUPP;
			opt = (struct nmreq_option *)(uintptr_t)opt->nro_next;
		}
		return EOPNOTSUPP;
	}
	if (hdr->nr_body == 0)
		return EINVAL;
	switch (hdr->nr_reqtype) {
	case NETMAP_REQ_REGISTER:
		return do_register(p, hdr, (struct nmreq_register *)(uintptr_t)hdr->nr_body);
	case NETMAP_REQ_PORT_INFO_GET:
		return do_port_info(hdr, (struct nmreq_port_info_get *)(uintptr_t)hdr->nr_body);
	case NETMAP_REQ_PORT_HDR_SET:
		return do_port_hdr_set(p, hdr, (struct nmreq_port_hdr *)(uintptr_t)hdr->nr_body);
	case NETMAP_REQ_PORT_HDR_GET:
		return do_port_hdr_get(hdr, (struct nmreq_port_hdr *)(uintptr_t)hdr->nr_body);
	case NETMAP_REQ_VALE_ATTACH:
	case NETMAP_REQ_VALE_NEWIF:
	case NETMAP_REQ_POOLS_INFO_GET:
		return EOPNOTSUPP; /* not modelled */
	default:
		return EINVAL;
	}
}

/* ------------------------------------------------------------ link down */

/*
 * On the generic adapter a call made while the link is down sleeps
 * uninterruptibly until the link is up (recorded). Here it sleeps until the
 * link is up or FAKENETMAP_DOWN_BLOCK_MS passed, and says so in the log.
 * Called with G held; drops it while sleeping. Returns 0 if p is still bound.
 */
static int link_wait(struct fk_priv *p, const char *op, double entered)
{
	struct fk_nic *nic;
	double t0, waited;
	int timed_out = 0;

	if (p->na == NULL || p->na->kind != FK_NIC)
		return 0;
	nic = p->na->nic;
	if (nic_link_up(nic))
		return 0;
	t0 = now_s();
	st.link_blocks++;
	while (!nic_link_up(nic)) {
		if ((now_s() - t0) * 1000.0 >= down_block_ms) {
			timed_out = 1;
			break;
		}
		pthread_mutex_unlock(&G);
		sleep_ms(5);
		pthread_mutex_lock(&G);
		if (p->na == NULL)
			return -1;
	}
	waited = (now_s() - t0) * 1000.0;
	st.link_block_timeouts += timed_out;
	fk_log("link-block nic=%s op=%s fd=%d entered=%.6f blocked_at=%.6f down_since=%.6f "
	       "waited_ms=%.1f end=%s",
	       nic->name, op, p->fd, entered, t0, nic->down_since, waited,
	       timed_out ? "bound" : "up");
	return 0;
}

/* ------------------------------------------------------------ poll */

/* netmap_poll: one pass over the bound rings */
static short netmap_poll(struct fk_priv *p, short events, int *changed)
{
	short revents = 0;
	short want_tx = events & (POLLOUT | POLLWRNORM);
	short want_rx = events & (POLLIN | POLLRDNORM);

	if (p->na == NULL)
		return POLLERR; /* recorded for an fd that was never registered */
	if (p->txpoll || want_tx) {
		for (uint32_t i = 0; i < p->nbtx; i++) {
			struct fk_kring *k = p->btx[i];
			if (!want_tx && k->ring->head == k->hwcur)
				continue;
			if (sync_prologue(k) >= k->n) {
				ring_reinit(k, "poll");
				revents |= POLLERR;
			} else {
				*changed |= txsync(k, 0);
				sync_finalize(k);
			}
			if (k->rcur != k->rtail) {
				revents |= want_tx;
				want_tx = 0;
			}
		}
	}
	if (want_rx) {
		for (uint32_t i = 0; i < p->nbrx; i++) {
			struct fk_kring *k = p->brx[i];
			if (sync_prologue(k) >= k->n) {
				ring_reinit(k, "poll");
				revents |= POLLERR;
			} else {
				*changed |= rxsync(k);
				sync_finalize(k);
			}
			if (k->rcur != k->rtail)
				revents |= want_rx;
		}
	}
	return revents;
}

static int my_efd(void)
{
	if (my_waiter.efd < 0)
		my_waiter.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return my_waiter.efd;
}

static void drain(int efd)
{
	uint64_t v;

	while (read(efd, &v, sizeof(v)) > 0)
		;
}

static int fake_poll(struct pollfd *pfd, nfds_t n, int timeout)
{
	double entered = now_s(), deadline = entered + (timeout > 0 ? timeout / 1000.0 : 0);
	struct pollfd stackbuf[64], *rp = n + 1 <= 64 ? stackbuf : calloc(n + 1, sizeof(*rp));
	nfds_t nreal = 0;
	int efd = my_efd(), result;

	if (rp == NULL || efd < 0) {
		errno = ENOMEM;
		return -1;
	}
	for (nfds_t i = 0; i < n; i++)
		if (priv_of(pfd[i].fd) == NULL)
			rp[nreal++] = pfd[i];
	for (;;) {
		int ready = 0, changed = 0, expired, wait_ms, rc;

		drain(efd);
		pthread_mutex_lock(&G);
		st.polls++;
		waiter_add(&my_waiter);
		for (nfds_t i = 0; i < n; i++) {
			struct fk_priv *p = priv_of(pfd[i].fd);
			if (p == NULL)
				continue;
			if (link_wait(p, "poll", entered) < 0) {
				pfd[i].revents = POLLNVAL;
			} else {
				pfd[i].revents = (short)(netmap_poll(p, pfd[i].events, &changed) &
							 (pfd[i].events | POLLERR | POLLHUP | POLLNVAL));
			}
			ready += pfd[i].revents != 0;
		}
		if (changed)
			notify_all();
		pthread_mutex_unlock(&G);
		expired = timeout == 0 || (timeout > 0 && now_s() >= deadline);
		if (ready || expired) {
			if (nreal) {
				rc = real_poll(rp, nreal, 0);
				if (rc < 0) {
					result = -1;
					break;
				}
			}
			ready = 0;
			for (nfds_t i = 0, r = 0; i < n; i++) {
				if (priv_of(pfd[i].fd) == NULL)
					pfd[i].revents = rp[r++].revents;
				ready += pfd[i].revents != 0;
			}
			result = ready;
			break;
		}
		/* sleep until a ring changes, a real fd is ready, a signal, or the timeout */
		wait_ms = timeout < 0 ? -1 : (int)((deadline - now_s()) * 1000.0 + 0.999);
		if (wait_ms < 0 && timeout >= 0)
			wait_ms = 0;
		rp[nreal].fd = efd;
		rp[nreal].events = POLLIN;
		rp[nreal].revents = 0;
		rc = real_poll(rp, nreal + 1, wait_ms);
		pthread_mutex_lock(&G);
		waiter_del(&my_waiter);
		pthread_mutex_unlock(&G);
		if (rc < 0) {
			result = -1;
			break;
		}
		if (timeout > 0 && rc == 0 && now_s() < deadline)
			continue;
		/* another pass: it syncs and finds what is ready (the kernel does the same) */
		if (rc > 0 && !(rc == 1 && rp[nreal].revents)) {
			/* a real fd is ready: one more pass over the fake ones and return */
			timeout = 0;
		}
	}
	{
		int saved = errno;
		pthread_mutex_lock(&G);
		waiter_del(&my_waiter);
		pthread_mutex_unlock(&G);
		if (rp != stackbuf)
			free(rp);
		errno = saved;
	}
	return result;
}

/* ------------------------------------------------------------ control API */

static struct fk_q *side_q(struct fk_nic *nic, const char *side)
{
	if (strcmp(side, "wire") == 0)
		return &nic->wire_out;
	if (strcmp(side, "host") == 0)
		return &nic->stack_in;
	return NULL;
}

/* a frame arrives on NIC's wire ("wire") or the host stack sends one ("host") */
int fakenetmap_inject(const char *name, const char *side, const void *data, unsigned len)
{
	struct fk_nic *nic;
	int rc;

	resolve();
	if (len > FK_MAX_FRAME)
		return -EMSGSIZE;
	pthread_mutex_lock(&G);
	nic = nic_find(name);
	if (nic == NULL)
		rc = -ENXIO;
	else if (strcmp(side, "wire") == 0)
		rc = nic_wire_recv(nic, data, len);
	else if (strcmp(side, "host") == 0)
		rc = nic_stack_xmit(nic, data, len);
	else
		rc = -EINVAL;
	if (rc == 0)
		notify_all();
	pthread_mutex_unlock(&G);
	return rc;
}

/* the next frame NIC sent on its wire ("wire") or delivered to its host stack ("host") */
int fakenetmap_read(const char *name, const char *side, void *buf, unsigned cap,
		    int timeout_ms)
{
	struct timespec until;
	struct fk_nic *nic;
	struct fk_q *q;
	struct fk_frame *f;
	int rc;

	resolve();
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&G);
	nic = nic_find(name);
	q = nic ? side_q(nic, side) : NULL;
	if (q == NULL) {
		pthread_mutex_unlock(&G);
		return -ENXIO;
	}
	while ((f = q_peek(q)) == NULL && timeout_ms > 0)
		if (pthread_cond_timedwait(&G_cond, &G, &until) == ETIMEDOUT)
			break;
	if (f == NULL) {
		rc = -EAGAIN;
	} else if (f->len > cap) {
		rc = -EMSGSIZE;
	} else {
		memcpy(buf, f->data, f->len);
		rc = (int)f->len;
		q_drop_head(q);
	}
	pthread_mutex_unlock(&G);
	return rc;
}

int fakenetmap_set_link(const char *name, int up)
{
	struct fk_nic *nic;

	resolve();
	pthread_mutex_lock(&G);
	nic = nic_find(name);
	if (nic) {
		nic->ctl_up = up != 0;
		nic_link_up(nic);
		fk_log("link nic=%s %s", name, up ? "up" : "down");
		notify_all();
	}
	pthread_mutex_unlock(&G);
	return nic ? 0 : -ENXIO;
}

/* registered fds of an adapter (NIC, pipe end, VALE port), -1 if it does not exist */
/* the virtio-net header length of a port, -ENXIO if there is no such adapter */
int fakenetmap_hdr_len(const char *name)
{
	struct fk_adapter *na;
	int n;

	resolve();
	pthread_mutex_lock(&G);
	na = adapter_find(name);
	n = na ? (int)na->hdr_len : -ENXIO;
	pthread_mutex_unlock(&G);
	return n;
}

int fakenetmap_users(const char *name)
{
	struct fk_adapter *na;
	int n;

	resolve();
	pthread_mutex_lock(&G);
	na = adapter_find(name);
	n = na ? na->fds : -1;
	pthread_mutex_unlock(&G);
	return n;
}

static long long stat_get(const char *key)
{
	long long v = -1;

#define K(x)                            \
	if (strcmp(key, #x) == 0)       \
		v = st.x;
	K(opens) K(registers) K(register_errors) K(txsyncs) K(rxsyncs) K(polls) K(reinits)
	K(tail_restored) K(bad_slots) K(link_blocks) K(link_block_timeouts) K(mmaps) K(munmaps)
	K(wire_tx) K(wire_rx) K(host_tx) K(host_rx) K(vale_drops) K(pipe_frames)
	K(audit_errors) K(closes) K(port_hdr_sets) K(vale_hdr_drops) K(vale_gso_drops)
#undef K
	if (strcmp(key, "live_maps") == 0) {
		v = 0;
		for (struct fk_map *mp = maps; mp; mp = mp->next)
			v++;
	}
	if (strcmp(key, "open_fds") == 0) {
		v = 0;
		for (int i = 0; i < FK_MAX_FDS; i++)
			v += fds[i] != NULL;
	}
	return v;
}

/* a counter by name (see stat_keys), -1 if there is no such counter */
long long fakenetmap_stat(const char *key)
{
	long long v;

	pthread_mutex_lock(&G);
	v = stat_get(key);
	pthread_mutex_unlock(&G);
	return v;
}

/* check every region without pipes: each buffer in exactly one slot; returns the errors */
int fakenetmap_audit(void)
{
	int errors = 0;

	pthread_mutex_lock(&G);
	for (struct fk_mem *m = mems; m; m = m->next)
		errors += mem_audit(m, "request");
	pthread_mutex_unlock(&G);
	return errors;
}

static const char *stat_keys[] = {
	"opens", "registers", "register_errors", "txsyncs", "rxsyncs", "polls", "reinits",
	"tail_restored", "bad_slots", "link_blocks", "link_block_timeouts", "mmaps", "munmaps",
	"wire_tx", "wire_rx", "host_tx", "host_rx", "vale_drops", "pipe_frames", "audit_errors",
	"closes", "port_hdr_sets", "vale_hdr_drops", "vale_gso_drops", "live_maps", "open_fds",
	NULL,
};

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* one request line of the control protocol -> one reply line */
static void ctl_handle(char *line, char *out, size_t cap)
{
	char *argv[5] = {0};
	int argc = 0;
	static unsigned char frame[FK_MAX_FRAME];

	for (char *tok = strtok(line, " \t\r\n"); tok && argc < 5; tok = strtok(NULL, " \t\r\n"))
		argv[argc++] = tok;
	if (argc == 0) {
		snprintf(out, cap, "err empty");
	} else if (strcmp(argv[0], "inject") == 0 && argc == 4) {
		size_t hl = strlen(argv[3]), n = hl / 2;
		int rc = 0;
		if (hl % 2 || n > sizeof(frame)) {
			snprintf(out, cap, "err bad frame");
			return;
		}
		for (size_t i = 0; i < n; i++) {
			int hi = hexval(argv[3][2 * i]), lo = hexval(argv[3][2 * i + 1]);
			if (hi < 0 || lo < 0)
				rc = -EINVAL;
			frame[i] = (unsigned char)(hi << 4 | lo);
		}
		if (rc == 0)
			rc = fakenetmap_inject(argv[1], argv[2], frame, (unsigned)n);
		snprintf(out, cap, rc == 0 ? "ok" : "err %d", -rc);
	} else if (strcmp(argv[0], "read") == 0 && argc >= 3) {
		int rc = fakenetmap_read(argv[1], argv[2], frame, sizeof(frame),
					 argc > 3 ? atoi(argv[3]) : 0);
		if (rc < 0) {
			snprintf(out, cap, rc == -EAGAIN ? "none" : "err %d", -rc);
		} else {
			size_t o = (size_t)snprintf(out, cap, "frame ");
			for (int i = 0; i < rc && o + 3 < cap; i++)
				o += (size_t)snprintf(out + o, cap - o, "%02x", frame[i]);
		}
	} else if (strcmp(argv[0], "link") == 0 && argc == 3) {
		int rc = fakenetmap_set_link(argv[1], strcmp(argv[2], "up") == 0);
		snprintf(out, cap, rc == 0 ? "ok" : "err %d", -rc);
	} else if (strcmp(argv[0], "users") == 0 && argc == 2) {
		snprintf(out, cap, "%d", fakenetmap_users(argv[1]));
	} else if (strcmp(argv[0], "hdr") == 0 && argc == 2) {
		snprintf(out, cap, "%d", fakenetmap_hdr_len(argv[1]));
	} else if (strcmp(argv[0], "audit") == 0) {
		snprintf(out, cap, "%d", fakenetmap_audit());
	} else if (strcmp(argv[0], "stats") == 0) {
		size_t o = 0;
		for (int i = 0; stat_keys[i] && o < cap; i++)
			o += (size_t)snprintf(out + o, cap - o, "%s%s=%lld", i ? " " : "",
					      stat_keys[i], fakenetmap_stat(stat_keys[i]));
	} else {
		snprintf(out, cap, "err unknown request");
	}
}

static void *ctl_thread(void *arg)
{
	int ls = (int)(intptr_t)arg;
	static char out[2 * FK_MAX_FRAME + 64];

	for (;;) {
		char line[2 * FK_MAX_FRAME + 64];
		size_t have = 0;
		int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL;
		}
		for (;;) {
			ssize_t r = read(c, line + have, sizeof(line) - 1 - have);
			char *nl;
			if (r <= 0)
				break;
			have += (size_t)r;
			line[have] = 0;
			while ((nl = memchr(line, '\n', have)) != NULL) {
				size_t used = (size_t)(nl - line) + 1, ol;
				*nl = 0;
				ctl_handle(line, out, sizeof(out) - 1);
				ol = strlen(out);
				out[ol++] = '\n';
				if (write(c, out, ol) < 0)
					break;
				memmove(line, line + used, have - used);
				have -= used;
				line[have] = 0;
			}
			if (have == sizeof(line) - 1)
				break;
		}
		real_close(c);
	}
}

static void ctl_start(void)
{
	struct sockaddr_un sa;
	pthread_t th;
	int ls;

	if (ctl_started || ctl_path[0] == 0)
		return;
	ctl_started = 1;
	ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ctl_path);
	unlink(ctl_path);
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 4) < 0) {
		fk_log("ctl-error path=%s errno=%d", ctl_path, errno);
		real_close(ls);
		return;
	}
	if (pthread_create(&th, NULL, ctl_thread, (void *)(intptr_t)ls) == 0)
		pthread_detach(th);
	fk_log("ctl-listening path=%s", ctl_path);
}

/* ------------------------------------------------------------ setup */

/* "NAME/N": cut tok at the '/', and N (dflt without one) kept within lo..hi */
static uint32_t cut_count(char *tok, uint32_t dflt, uint32_t lo, uint32_t hi)
{
	char *slash = strchr(tok, '/');
	uint32_t n = dflt;

	if (slash) {
		*slash = 0;
		n = (uint32_t)strtoul(slash + 1, NULL, 10);
	}
	return n < lo ? lo : n > hi ? hi : n;
}

static void parse_nics(const char *spec)
{
	char buf[1024], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *tok = strtok_r(buf, ", ", &save); tok && nnics < FK_MAX_NICS;
	     tok = strtok_r(NULL, ", ", &save)) {
		struct fk_nic *nic = &nics[nnics];
		uint32_t rings = cut_count(tok, 1, 1, FK_MAX_RINGS);
		if (tok[0] == 0 || strlen(tok) >= NM_IFNAMSIZ)
			continue;
		snprintf(nic->name, sizeof(nic->name), "%s", tok);
		nic->nrings = rings;
		nic->ctl_up = 1;
		nic->was_up = 1;
		nnics++;
	}
}

/* "fk0/64,fk1": NICs played as native drivers, with the slots of their TX rings */
static void parse_native(const char *spec)
{
	char buf[1024], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		uint32_t slots = cut_count(tok, FK_SLOTS, 8, FK_SLOTS);
		struct fk_nic *nic;
		if ((nic = nic_find(tok)) != NULL) {
			nic->native = 1;
			nic->tx_slots = slots;
		}
	}
}

__attribute__((constructor)) static void fk_init(void)
{
	const char *v;

	resolve();
	if ((v = getenv("FAKENETMAP_PATH")) != NULL)
		snprintf(fake_path, sizeof(fake_path), "%s", v);
	if ((v = getenv("FAKENETMAP_NICS")) != NULL)
		parse_nics(v);
	if ((v = getenv("FAKENETMAP_LEGACY_API")) != NULL)
		legacy_api = atoi(v);
	if ((v = getenv("FAKENETMAP_LINK_SYSFS")) != NULL)
		link_sysfs = atoi(v) != 0;
	if ((v = getenv("FAKENETMAP_DRAIN_MS")) != NULL && atoi(v) > 0)
		drain_ms = atoi(v);
	if ((v = getenv("FAKENETMAP_DOWN_BLOCK_MS")) != NULL && atoi(v) > 0)
		down_block_ms = atoi(v);
	if ((v = getenv("FAKENETMAP_LOG")) != NULL)
		snprintf(log_path, sizeof(log_path), "%s", v);
	if ((v = getenv("FAKENETMAP_CTL")) != NULL)
		snprintf(ctl_path, sizeof(ctl_path), "%s", v);
	if ((v = getenv("FAKENETMAP_NATIVE")) != NULL)
		parse_native(v);
	if ((v = getenv("FAKENETMAP_LINK_DOWN")) != NULL) {
		char buf[1024], *save = NULL;
		snprintf(buf, sizeof(buf), "%s", v);
		for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
			struct fk_nic *nic = nic_find(tok);
			if (nic) {
				nic->ctl_up = 0;
				nic->was_up = 0;
				nic->down_since = now_s();
			}
		}
	}
}

/*
 * FAKENETMAP_DRAIN_MS: at exit, wait (up to that long) until the test has read
 * what the NICs put on the wire and the host stack got. A real wire keeps what
 * was sent after the sender exits; here the queues die with the process, so a
 * bridge that ends by itself (--count) would race the test's reads.
 */
static int queues_empty(void)
{
	int empty = 1;

	pthread_mutex_lock(&G);
	for (int i = 0; i < nnics; i++)
		empty &= nics[i].wire_out.count == 0 && nics[i].stack_in.count == 0;
	pthread_mutex_unlock(&G);
	return empty;
}

static void drain_queues(void)
{
	for (int waited = 0; waited < drain_ms && !queues_empty(); waited += 10)
		usleep(10000);
}

__attribute__((destructor)) static void fk_fini(void)
{
	char line[1024];
	size_t o = 0;

	if (drain_ms > 0)
		drain_queues();

	if (st.opens == 0 || pthread_mutex_trylock(&G) != 0)
		return; /* another thread holds the state: no summary */
	for (int i = 0; stat_keys[i] && o < sizeof(line); i++)
		o += (size_t)snprintf(line + o, sizeof(line) - o, "%s%s=%lld", i ? " " : "",
				      stat_keys[i], stat_get(stat_keys[i]));
	pthread_mutex_unlock(&G);
	fk_log("exit %s", line);
}

/* ------------------------------------------------------------ the hooks */

static int is_fake_path(const char *path)
{
	return fake_path[0] && path && strcmp(path, fake_path) == 0;
}

static int fake_open_fd(int fd)
{
	struct fk_priv *p;

	if (fd < 0)
		return fd;
	if (fd >= FK_MAX_FDS || (p = calloc(1, sizeof(*p))) == NULL) {
		real_close(fd);
		errno = fd >= FK_MAX_FDS ? EMFILE : ENOMEM;
		return -1;
	}
	p->fd = fd;
	pthread_mutex_lock(&G);
	st.opens++;
	ctl_start();
	__atomic_store_n(&fds[fd], p, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&G);
	return fd;
}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int fd;

	resolve();
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	fd = real_open(path, flags, mode);
	return is_fake_path(path) ? fake_open_fd(fd) : fd;
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int fd;

	resolve();
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	fd = real_open64(path, flags, mode);
	return is_fake_path(path) ? fake_open_fd(fd) : fd;
}

int __open_2(const char *path, int flags)
{
	return open(path, flags);
}

int __open64_2(const char *path, int flags)
{
	return open64(path, flags);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int fd;

	resolve();
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	fd = real_openat(dirfd, path, flags, mode);
	return is_fake_path(path) ? fake_open_fd(fd) : fd;
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int fd;

	resolve();
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	fd = real_openat64(dirfd, path, flags, mode);
	return is_fake_path(path) ? fake_open_fd(fd) : fd;
}

int __openat_2(int dirfd, const char *path, int flags)
{
	return openat(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	return openat64(dirfd, path, flags);
}

int close(int fd)
{
	struct fk_priv *p;

	resolve();
	p = priv_of(fd);
	if (p) {
		pthread_mutex_lock(&G);
		__atomic_store_n(&fds[fd], NULL, __ATOMIC_RELEASE);
		do_unregister(p);
		st.closes++;
		pthread_mutex_unlock(&G);
		free(p);
	}
	return real_close(fd);
}

static int legacy_ioctl(unsigned long req, void *arg)
{
	struct nmreq *r = arg;

	if (r == NULL)
		return EFAULT;
	if (legacy_api == 0)
		return ENOTTY; /* the legacy requests are not modelled */
	if (r->nr_version != (uint32_t)legacy_api) {
		r->nr_version = (uint32_t)legacy_api; /* a module answers with its own API */
		return EINVAL;
	}
	return req == NIOCGINFO ? ENXIO : EOPNOTSUPP;
}

static int fake_ioctl(struct fk_priv *p, unsigned long req, void *arg)
{
	double entered = now_s();
	int err = 0, changed = 0;

	pthread_mutex_lock(&G);
	switch (req) {
	case NIOCCTRL:
		if (legacy_api) {
			err = ENOTTY; /* an API < 14 module has no NIOCCTRL */
			break;
		}
		err = do_ctrl(p, arg);
		if (err)
			st.register_errors++;
		break;
	case NIOCTXSYNC:
	case NIOCRXSYNC: {
		int tx = req == NIOCTXSYNC;
		if (p->na == NULL) {
			err = ENXIO; /* recorded: sync on an fd never registered */
			break;
		}
		if (link_wait(p, tx ? "txsync" : "rxsync", entered) < 0) {
			err = EBADF;
			break;
		}
		for (uint32_t i = 0; i < (tx ? p->nbtx : p->nbrx); i++) {
			struct fk_kring *k = tx ? p->btx[i] : p->brx[i];
			if (sync_prologue(k) >= k->n) {
				ring_reinit(k, tx ? "txsync" : "rxsync");
				continue;
			}
			changed |= tx ? txsync(k, 1) : rxsync(k);
			sync_finalize(k);
		}
		if (changed)
			notify_all();
		break;
	}
	case NIOCGINFO:
	case NIOCREGIF:
		err = legacy_ioctl(req, arg);
		break;
	default:
		err = ENOTTY;
	}
	pthread_mutex_unlock(&G);
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

int ioctl(int fd, unsigned long req, ...)
{
	struct fk_priv *p;
	va_list ap;
	void *arg;

	resolve();
	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	p = priv_of(fd);
	if (p == NULL)
		return real_ioctl(fd, req, arg);
	return fake_ioctl(p, req, arg);
}

static void *fake_mmap(void *addr, size_t len, int prot, int flags, struct fk_priv *p,
		       off_t off)
{
	struct fk_map *mp;
	void *res;
	int memfd;
	uint64_t size;

	pthread_mutex_lock(&G);
	if (p->na == NULL || off < 0 || len == 0) {
		pthread_mutex_unlock(&G);
		errno = EINVAL; /* recorded: mmap of an fd never registered */
		return MAP_FAILED;
	}
	memfd = p->na->mem->memfd;
	size = p->na->mem->size;
	pthread_mutex_unlock(&G);
	if ((uint64_t)off + len > size) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	res = real_mmap(addr, len, prot, flags, memfd, off);
	if (res != MAP_FAILED && (mp = calloc(1, sizeof(*mp))) != NULL) {
		pthread_mutex_lock(&G);
		st.mmaps++;
		mp->addr = res;
		mp->len = len;
		mp->next = maps;
		maps = mp;
		pthread_mutex_unlock(&G);
	}
	return res;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct fk_priv *p;

	resolve();
	p = priv_of(fd);
	if (p == NULL)
		return real_mmap(addr, len, prot, flags, fd, off);
	return fake_mmap(addr, len, prot, flags, p, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct fk_priv *p;

	resolve();
	p = priv_of(fd);
	if (p == NULL)
		return real_mmap64(addr, len, prot, flags, fd, off);
	return fake_mmap(addr, len, prot, flags, p, off);
}

int munmap(void *addr, size_t len)
{
	resolve();
	if (maps) {
		pthread_mutex_lock(&G);
		for (struct fk_map **pp = &maps; *pp; pp = &(*pp)->next) {
			struct fk_map *mp = *pp;
			if (mp->addr == addr) {
				if (mp->len != len)
					fk_log("munmap-size addr=%p mapped=%zu unmapped=%zu", addr,
					       mp->len, len);
				*pp = mp->next;
				free(mp);
				st.munmaps++;
				break;
			}
		}
		pthread_mutex_unlock(&G);
	}
	return real_munmap(addr, len);
}

int poll(struct pollfd *pfd, nfds_t n, int timeout)
{
	int fake = 0;

	resolve();
	for (nfds_t i = 0; i < n && !fake; i++)
		fake = priv_of(pfd[i].fd) != NULL;
	if (!fake)
		return real_poll(pfd, n, timeout);
	return fake_poll(pfd, n, timeout);
}

int __poll_chk(struct pollfd *pfd, nfds_t n, int timeout, size_t fdslen)
{
	(void)fdslen;
	return poll(pfd, n, timeout);
}
