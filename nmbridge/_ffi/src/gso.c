/*
 * The virtio-net header's check and software GSO (offload.h).
 *
 * The check keeps to the kernel's own rules for a header handed to a packet
 * socket or a TAP (virtio_net_hdr_to_skb, af_packet's and tun's hdr_len
 * rule, and the checks of the TCP, UDP, IPv4 and IPv6 GSO code), and is
 * stricter where the segmenter needs it: a super-frame must be exactly what
 * its IP header says (no padding), its L4 header where csum_start says, and
 * its headers within GSO_MAX_HDRS bytes.
 *
 * The segmenter writes what the kernel's skb_gso_segment() writes for a
 * device without TSO and TX checksum offload: the headers of the super-frame
 * in front of each segment's payload, IP lengths, IPv4 ID (+1 a segment) and
 * header checksum, TCP sequence and flags, UDP length, and the L4 checksum
 * finished from the pseudo-header sum the sender left in its field.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "offload.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8
#define MAX_VLAN_TAGS 2
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define TCP_HLEN 20
#define UDP_HLEN 8
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define TCP_CSUM_OFF 16
#define UDP_CSUM_OFF 6
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_PSH 0x08
#define TCP_FLAG_CWR 0x80

/* the extension headers the kernel's IPv6 GSO walks past (ipv6_gso_pull_exthdrs) */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_DEST 60

/*
 * The kernel's UDP_MAX_SEGMENTS: 128 since Linux 6.10 (64 before), which a
 * USO super-frame may not exceed (virtio_net_hdr_to_skb refuses it).
 */
#define UDP_MAX_SEGMENTS 128
/*
 * TCP has no such limit in the kernel; 2048 covers a 64 KiB super-frame at
 * Linux's smallest send MSS (48), and keeps a hostile header (gso_size 1)
 * from asking for 65535 segments.
 */
#define TCP_MAX_SEGMENTS 2048
/* the kernel's GSO_BY_FRAGS: a gso_size that means something else to it */
#define GSO_BY_FRAGS 0xffff
/*
 * The most bytes of headers (Ethernet to the end of L4) a super-frame may
 * have: two tags, IPv4 with options and TCP with options need 142; the rest
 * is for IPv6 extension headers.
 */
#define GSO_MAX_HDRS 256
/* the most header bytes in front of a segment (0, 10 or 12 in use): beyond, a caller's mistake */
#define MAX_OUT_HDR 64
/* where an L4 header can start at the earliest: Ethernet and the smallest IP header */
#define MIN_CSUM_START (ETH_HLEN + IPV4_HLEN)

/* What the parse of a super-frame finds. */
struct gso_frame {
	uint32_t len;     /* the frame's bytes */
	uint32_t l3;      /* IP header offset */
	uint32_t l4;      /* L4 header offset (= csum_start) */
	uint32_t hdrs;    /* bytes of headers: the payload starts there */
	uint32_t mss;     /* payload bytes per segment */
	uint32_t payload; /* payload bytes of the whole super-frame */
	uint32_t nseg;    /* segments it makes */
	int ipv4;
	int tcp;
	uint8_t hdr[GSO_MAX_HDRS]; /* the first min(len, GSO_MAX_HDRS) bytes */
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v);
}

/* ---- ones' complement sums ---------------------------------------------- */

static uint32_t csum_fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint32_t)sum;
}

/*
 * The ones' complement sum of n bytes at p as big-endian 16-bit words,
 * folded. Summed in host order a word at a time (RFC 1071: the sum of
 * swapped words is the swapped sum), eight bytes a step.
 */
static uint32_t csum_run(const uint8_t *p, size_t n)
{
	uint64_t acc = 0;
	uint16_t w16;

	for (; n >= 8; p += 8, n -= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		acc += (w & 0xffffffffu) + (w >> 32);
	}
	for (; n >= 2; p += 2, n -= 2) {
		memcpy(&w16, p, 2);
		acc += w16;
	}
	if (n) {
		w16 = 0;
		memcpy(&w16, p, 1); /* a last odd byte is the high byte of a word padded with zero */
		acc += w16;
	}
	return ntohs((uint16_t)csum_fold(acc));
}

/* A run's sum added at position pos of the summed bytes: at an odd one its bytes swap roles. */
static uint64_t csum_add_at(uint64_t sum, uint32_t run, uint32_t pos)
{
	if (pos & 1)
		run = ((run & 0xff) << 8) | (run >> 8);
	return sum + run;
}

/* ---- reading the scattered frame ---------------------------------------- */

struct iov_cursor {
	const struct iovec *iov;
	int niov;
	int k;      /* the buffer the cursor is in */
	size_t off; /* and the offset in it */
};

static void cursor_init(struct iov_cursor *c, const struct nmb_frame_in *f)
{
	c->iov = f->iov;
	c->niov = f->niov;
	c->k = 0;
	c->off = 0;
}

/* The next contiguous run of at most want bytes: its start, and its length in *n. */
static const uint8_t *cursor_run(struct iov_cursor *c, uint32_t want, uint32_t *n)
{
	while (c->k < c->niov && c->off >= c->iov[c->k].iov_len) {
		c->k++;
		c->off = 0;
	}
	if (c->k >= c->niov || want == 0) {
		*n = 0;
		return NULL;
	}
	size_t left = c->iov[c->k].iov_len - c->off;
	const uint8_t *p = (const uint8_t *)c->iov[c->k].iov_base + c->off;

	*n = left < want ? (uint32_t)left : want;
	c->off += *n;
	return p;
}

/* Copy the next n bytes to dst (n no more than what is left: frame_bytes_ok checked it). */
static void cursor_copy(struct iov_cursor *c, uint8_t *dst, uint32_t n)
{
	while (n > 0) {
		uint32_t got;
		const uint8_t *p = cursor_run(c, n, &got);
		if (p == NULL)
			return;
		memcpy(dst, p, got);
		dst += got;
		n -= got;
	}
}

static void cursor_skip(struct iov_cursor *c, uint32_t n)
{
	while (n > 0) {
		uint32_t got;
		if (cursor_run(c, n, &got) == NULL)
			return;
		n -= got;
	}
}

/* Whether the iovs hold the len bytes the frame claims. */
static int frame_bytes_ok(const struct nmb_frame_in *f)
{
	uint64_t room = 0;

	if (f->niov < 0 || (f->niov > 0 && f->iov == NULL))
		return 0;
	for (int k = 0; k < f->niov; k++)
		room += f->iov[k].iov_len;
	return f->len <= room;
}

/* ---- parse: the rules a super-frame must keep ---------------------------- */

/* The IPv4 header at g->l3: sound, not a fragment, proto inside, exactly the frame's length. */
static int parse_ipv4(struct gso_frame *g, uint32_t avail, uint8_t proto)
{
	const uint8_t *ip = g->hdr + g->l3;
	uint32_t ihl;

	if (g->l3 + IPV4_HLEN > avail || ip[0] >> 4 != 4)
		return -1;
	ihl = (ip[0] & 0x0fu) * 4;
	if (ihl < IPV4_HLEN || g->l3 + ihl > avail)
		return -1;
	if (ip[9] != proto || (get16(ip + 6) & 0x3fff) != 0) /* MF or an offset: a fragment */
		return -1;
	if (get16(ip + 2) != g->len - g->l3)
		return -1;
	g->l4 = g->l3 + ihl;
	return 0;
}

/*
 * The IPv6 header at g->l3, past the extension headers the kernel's GSO
 * walks (hop-by-hop, routing, destination options) to proto; any other
 * (a fragment header among them) is refused. Its payload length exactly the
 * frame's (a jumbogram's 0 is refused with the rest).
 */
static int parse_ipv6(struct gso_frame *g, uint32_t avail, uint8_t proto)
{
	const uint8_t *ip = g->hdr + g->l3;
	uint32_t off = g->l3 + IPV6_HLEN;
	uint8_t next;

	if (off > avail || ip[0] >> 4 != 6)
		return -1;
	if (get16(ip + 4) != g->len - off)
		return -1;
	next = ip[6];
	/* each extension header is 8 bytes at least, so avail bounds the walk */
	while (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST) {
		if (off + 8 > avail)
			return -1;
		next = g->hdr[off];
		off += (g->hdr[off + 1] + 1u) * 8;
	}
	if (next != proto || off > avail)
		return -1;
	g->l4 = off;
	return 0;
}

/*
 * The GSO rules: Ethernet (two tags at most), the IP version gso_type names,
 * the L4 header where csum_start points with the checksum where the kernel
 * wants it, lengths exact, the segments bounded. Fills g.
 */
static int gso_parse(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f,
		     struct gso_frame *g)
{
	uint8_t type = vh->gso_type & (uint8_t)~NMB_VNET_GSO_ECN;
	uint32_t avail = f->len < GSO_MAX_HDRS ? f->len : GSO_MAX_HDRS;
	uint32_t ethertype, thlen, max_seg;
	struct iov_cursor c;

	memset(g, 0, offsetof(struct gso_frame, hdr));
	g->len = f->len;
	if (type == NMB_VNET_GSO_TCPV4 || type == NMB_VNET_GSO_TCPV6)
		g->tcp = 1;
	else if (type != NMB_VNET_GSO_UDP_L4 || (vh->gso_type & NMB_VNET_GSO_ECN))
		return -1; /* UFO and unknown types; ECN only with TCP */
	if (!(vh->flags & NMB_VNET_F_NEEDS_CSUM) || vh->gso_size == 0 ||
	    vh->gso_size == GSO_BY_FRAGS)
		return -1;
	if (vh->csum_offset != (g->tcp ? TCP_CSUM_OFF : UDP_CSUM_OFF))
		return -1;
	cursor_init(&c, f);
	cursor_copy(&c, g->hdr, avail);

	if (avail < ETH_HLEN)
		return -1;
	g->l3 = ETH_HLEN;
	ethertype = get16(g->hdr + 12);
	for (int tags = 0; ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD; tags++) {
		if (tags == MAX_VLAN_TAGS || g->l3 + 4 > avail)
			return -1;
		ethertype = get16(g->hdr + g->l3 + 2);
		g->l3 += 4;
	}
	if (ethertype == ETH_P_IP && type != NMB_VNET_GSO_TCPV6)
		g->ipv4 = 1;
	else if (!(ethertype == ETH_P_IPV6 && type != NMB_VNET_GSO_TCPV4))
		return -1;
	if ((g->ipv4 ? parse_ipv4 : parse_ipv6)(g, avail, g->tcp ? IPPROTO_TCP_ : IPPROTO_UDP_) < 0)
		return -1;
	if (g->l4 != vh->csum_start)
		return -1;

	if (g->tcp) {
		if (g->l4 + TCP_HLEN > avail)
			return -1;
		thlen = (g->hdr[g->l4 + 12] >> 4) * 4u;
		if (thlen < TCP_HLEN)
			return -1;
	} else {
		thlen = UDP_HLEN;
		if (g->l4 + UDP_HLEN > avail || get16(g->hdr + g->l4 + 4) != g->len - g->l4)
			return -1;
	}
	g->hdrs = g->l4 + thlen;
	if (g->hdrs > avail)
		return -1;
	g->mss = vh->gso_size;
	g->payload = g->len - g->hdrs;
	g->nseg = g->payload <= g->mss ? 1 : (g->payload + g->mss - 1) / g->mss;
	max_seg = g->tcp ? TCP_MAX_SEGMENTS : UDP_MAX_SEGMENTS;
	return g->nseg <= max_seg ? 0 : -1;
}

/* The rules for every header, super-frame or not. */
static int vnet_basic_ok(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f)
{
	if (!frame_bytes_ok(f) || f->len < ETH_HLEN) /* af_packet wants the link header whole */
		return 0;
	if (vh->flags & ~(NMB_VNET_F_NEEDS_CSUM | NMB_VNET_F_DATA_VALID))
		return 0;
	/* af_packet and tun raise hdr_len to cover the checksum field, then refuse it past the end */
	if (vh->hdr_len > f->len)
		return 0;
	if (vh->flags & NMB_VNET_F_NEEDS_CSUM) {
		if (vh->csum_start < MIN_CSUM_START ||
		    (uint32_t)vh->csum_start + vh->csum_offset + 2 > f->len)
			return 0;
	}
	return 1;
}

int nmb_vnet_check(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f)
{
	struct gso_frame g;

	if (!vnet_basic_ok(vh, f))
		return -1;
	if (vh->gso_type == NMB_VNET_GSO_NONE)
		return 0;
	return gso_parse(vh, f, &g);
}

/* ---- plan: the slots each segment takes ---------------------------------- */

static uint32_t seg_len(const struct gso_frame *g, uint32_t i)
{
	if (g->nseg == 1)
		return g->len;
	return g->hdrs + (i + 1 < g->nseg ? g->mss : g->payload - (g->nseg - 1) * g->mss);
}

static uint32_t seg_slots(const struct nmb_tx_out *out, uint32_t len)
{
	uint32_t bs = out->ring->nr_buf_size;

	return (out->hdr_len + len + bs - 1) / bs;
}

/*
 * The slots all segments take (only the last differs from the rest), or -1
 * when one segment is longer than a chain may be or than the TX side sends,
 * or all of them more than the ring can ever have free: waiting for room
 * would then never end.
 */
static int64_t gso_plan(const struct gso_frame *g, const struct nmb_tx_out *out)
{
	const struct netmap_ring *ring = out->ring;
	uint32_t first = seg_slots(out, seg_len(g, 0)), last = seg_slots(out, seg_len(g, g->nseg - 1));
	uint64_t total = (uint64_t)first * (g->nseg - 1) + last;

	if (first > NETMAP_MAX_FRAGS || last > NETMAP_MAX_FRAGS)
		return -1;
	/* the first is the longest: a header's gso_size past the TX side's MTU */
	if (out->max_len > 0 && seg_len(g, 0) > out->max_len)
		return -1;
	if (total > ring->num_slots - 1)
		return -1;
	return (int64_t)total;
}

/* ---- write: one segment into consecutive slots ---------------------------- */

struct seg_writer {
	struct netmap_ring *ring;
	uint32_t bs;
	uint32_t first;  /* the segment's first slot */
	uint32_t slot;   /* the slot being filled */
	uint32_t fill;   /* bytes in it */
	uint8_t *buf;
};

static void writer_start(struct seg_writer *w, struct nmb_tx_out *out)
{
	w->ring = out->ring;
	w->bs = out->ring->nr_buf_size;
	w->first = w->slot = out->head;
	w->fill = 0;
	w->buf = (uint8_t *)nmb_slot_buf(w->ring, w->ring->slot[w->slot].buf_idx);
}

/* Close the slot being filled (more: a chain goes on) and open the next. */
static void writer_next_slot(struct seg_writer *w)
{
	struct netmap_slot *s = &w->ring->slot[w->slot];

	s->len = (uint16_t)w->fill;
	s->flags = NS_MOREFRAG;
	w->slot = nmb_ring_next(w->ring, w->slot);
	w->fill = 0;
	w->buf = (uint8_t *)nmb_slot_buf(w->ring, w->ring->slot[w->slot].buf_idx);
}

/* The room left in the slot being filled, opening the next when it is full. */
static uint32_t writer_room(struct seg_writer *w)
{
	if (w->fill == w->bs)
		writer_next_slot(w);
	return w->bs - w->fill;
}

static void writer_put(struct seg_writer *w, const uint8_t *p, uint32_t n)
{
	while (n > 0) {
		uint32_t piece = writer_room(w);
		if (piece > n)
			piece = n;
		memcpy(w->buf + w->fill, p, piece);
		w->fill += piece;
		p += piece;
		n -= piece;
	}
}

static void writer_zero(struct seg_writer *w, uint32_t n)
{
	while (n > 0) {
		uint32_t piece = writer_room(w);
		if (piece > n)
			piece = n;
		memset(w->buf + w->fill, 0, piece);
		w->fill += piece;
		n -= piece;
	}
}

/* The segment's last slot: its length, the end of the chain. */
static void writer_end(struct seg_writer *w)
{
	struct netmap_slot *s = &w->ring->slot[w->slot];

	s->len = (uint16_t)w->fill;
	s->flags = 0;
}

/* Byte pos of the segment written (header bytes counted) gets v: a field patched after the fact. */
static void writer_poke(struct seg_writer *w, uint32_t pos, uint8_t v)
{
	uint32_t slot = w->first + pos / w->bs;

	if (slot >= w->ring->num_slots)
		slot -= w->ring->num_slots;
	((uint8_t *)nmb_slot_buf(w->ring, w->ring->slot[slot].buf_idx))[pos % w->bs] = v;
}

/*
 * Copy n payload bytes from the frame into the segment, summing them as
 * they go (pos: where they start, counted from the L4 header).
 */
static uint64_t copy_and_sum(struct seg_writer *w, struct iov_cursor *c, uint32_t n, uint32_t pos)
{
	uint64_t sum = 0;

	while (n > 0) {
		uint32_t got;
		const uint8_t *p = cursor_run(c, n, &got);
		if (p == NULL)
			break;
		sum = csum_add_at(sum, csum_run(p, got), pos);
		writer_put(w, p, got);
		pos += got;
		n -= got;
	}
	return sum;
}

/* ---- headers and checksums of segment i ---------------------------------- */

/*
 * The headers of segment i of len bytes, from those of the super-frame:
 * IP length (and IPv4 ID and header checksum), TCP sequence and flags or UDP
 * length; the L4 checksum field gets the sender's pseudo-header sum moved
 * from the super-frame's length to the segment's, as the kernel moves it.
 */
static void seg_headers(const struct gso_frame *g, uint32_t i, uint32_t len, uint8_t *h)
{
	uint8_t *ip = h + g->l3, *l4 = h + g->l4;
	uint32_t old_l4 = g->len - g->l4, new_l4 = len - g->l4;
	uint8_t *field = l4 + (g->tcp ? TCP_CSUM_OFF : UDP_CSUM_OFF);
	uint64_t seed;

	memcpy(h, g->hdr, g->hdrs);
	if (g->ipv4) {
		uint32_t ihl = (ip[0] & 0x0fu) * 4;
		put16(ip + 2, len - g->l3);
		put16(ip + 4, get16(ip + 4) + i);
		put16(ip + 10, 0);
		put16(ip + 10, ~csum_run(ip, ihl));
	} else {
		put16(ip + 4, len - g->l3 - IPV6_HLEN);
	}
	if (g->tcp) {
		uint8_t fl = l4[13];
		put32(l4 + 4, get32(l4 + 4) + i * g->mss);
		if (i + 1 < g->nseg)
			fl &= (uint8_t)~(TCP_FLAG_FIN | TCP_FLAG_PSH);
		if (i > 0)
			fl &= (uint8_t)~TCP_FLAG_CWR;
		l4[13] = fl;
	} else {
		put16(l4 + 4, new_l4);
	}
	seed = (uint64_t)get16(field) + (~old_l4 & 0xffff) + new_l4;
	put16(field, csum_fold(seed));
}

/* The checksum to store: the kernel turns a 0 into 0xffff for UDP, and for any frame it finishes whole. */
static uint32_t csum_final(uint64_t sum, int mangle_zero)
{
	uint32_t c = ~csum_fold(sum) & 0xffff;

	return (c == 0 && mangle_zero) ? 0xffff : c;
}

/*
 * A super-frame with no more payload than one segment: the kernel sends it as
 * it is, its checksum finished (skb_checksum_help) and nothing else touched.
 */
static void write_whole(const struct gso_frame *g, const struct nmb_vnet_hdr *vh,
			struct iov_cursor *c, struct nmb_tx_out *out)
{
	struct seg_writer w;
	uint32_t field = vh->csum_start + vh->csum_offset;
	uint64_t sum;
	uint32_t csum;

	writer_start(&w, out);
	writer_zero(&w, out->hdr_len);
	writer_put(&w, g->hdr, g->hdrs);
	sum = csum_run(g->hdr + g->l4, g->hdrs - g->l4);
	sum += copy_and_sum(&w, c, g->payload, g->hdrs - g->l4);
	csum = csum_final(sum, 1);
	writer_poke(&w, out->hdr_len + field, (uint8_t)(csum >> 8));
	writer_poke(&w, out->hdr_len + field + 1, (uint8_t)csum);
	writer_end(&w);
}

static void write_segment(const struct gso_frame *g, uint32_t i, struct iov_cursor *c,
			  struct nmb_tx_out *out)
{
	uint8_t h[GSO_MAX_HDRS];
	uint32_t len = seg_len(g, i), field = g->l4 + (g->tcp ? TCP_CSUM_OFF : UDP_CSUM_OFF);
	struct seg_writer w;
	uint64_t sum;
	uint32_t csum;

	seg_headers(g, i, len, h);
	writer_start(&w, out);
	writer_zero(&w, out->hdr_len);
	writer_put(&w, h, g->hdrs);
	sum = csum_run(h + g->l4, g->hdrs - g->l4);
	sum += copy_and_sum(&w, c, len - g->hdrs, g->hdrs - g->l4);
	csum = csum_final(sum, !g->tcp);
	writer_poke(&w, out->hdr_len + field, (uint8_t)(csum >> 8));
	writer_poke(&w, out->hdr_len + field + 1, (uint8_t)csum);
	writer_end(&w);
}

int nmb_gso_segment(const struct nmb_vnet_hdr *vh, const struct nmb_frame_in *f,
		    struct nmb_tx_out *out, uint32_t *need)
{
	struct gso_frame g;
	struct iov_cursor c;
	int64_t slots;

	/* a buffer over 65535 bytes could not have its length said by a slot */
	if (out->ring == NULL || out->head >= out->ring->num_slots ||
	    out->ring->nr_buf_size == 0 || out->ring->nr_buf_size > 0xffff ||
	    out->hdr_len > MAX_OUT_HDR)
		return -1;
	if (!vnet_basic_ok(vh, f) || gso_parse(vh, f, &g) < 0)
		return -1;
	slots = gso_plan(&g, out);
	if (slots < 0)
		return -1;
	if ((uint64_t)slots > out->room) {
		*need = (uint32_t)slots;
		return 0;
	}

	cursor_init(&c, f);
	cursor_skip(&c, g.hdrs);
	for (uint32_t i = 0; i < g.nseg; i++) {
		uint32_t used = seg_slots(out, seg_len(&g, i));
		if (g.nseg == 1)
			write_whole(&g, vh, &c, out);
		else
			write_segment(&g, i, &c, out);
		out->head = (out->head + used) % out->ring->num_slots;
	}
	out->room -= (uint32_t)slots;
	out->bytes += g.len + (uint64_t)(g.nseg - 1) * g.hdrs;
	return (int)g.nseg;
}

/* ------------------------------------------------------------ a checksum left to finish */

/* byte pos of a frame laid over consecutive slots from first */
static uint8_t *frame_byte(struct netmap_ring *ring, uint32_t first, uint32_t pos)
{
	uint32_t bs = ring->nr_buf_size;
	struct netmap_slot *s = &ring->slot[(first + pos / bs) % ring->num_slots];

	return (uint8_t *)nmb_slot_buf(ring, s->buf_idx) + pos % bs;
}

/*
 * Finish a checksum the sender left to hardware: the ones' complement sum of
 * the bytes from start to the end of the frame (the field already holds the
 * pseudo-header sum), stored at start + offset.
 */
int nmb_csum_finish(struct netmap_ring *ring, uint32_t first, uint32_t len,
			    uint32_t start, uint32_t offset)
{
	uint64_t sum = 0;
	uint32_t bs = ring->nr_buf_size, field = start + offset;

	if (start >= len || field + 2 > len)
		return -EINVAL;
	if (len <= bs) {
		const uint8_t *b = (const uint8_t *)nmb_slot_buf(ring, ring->slot[first].buf_idx);
		uint32_t i = start;
		for (; i + 1 < len; i += 2)
			sum += (uint32_t)(b[i] << 8 | b[i + 1]);
		if (i < len)
			sum += (uint32_t)b[i] << 8;
	} else {
		for (uint32_t i = start; i < len; i++)
			sum += ((i - start) & 1) ? *frame_byte(ring, first, i)
						 : (uint32_t)*frame_byte(ring, first, i) << 8;
	}
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	sum = ~sum & 0xffff;
	if (sum == 0)
		sum = 0xffff; /* as the kernel does: 0 means "no checksum" to UDP */
	*frame_byte(ring, first, field) = (uint8_t)(sum >> 8);
	*frame_byte(ring, first, field + 1) = (uint8_t)sum;
	return 0;
}
