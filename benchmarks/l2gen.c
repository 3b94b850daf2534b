/*
 * l2gen: the traffic generator of benchmarks/l2fwd.py, compiled at run time.
 *
 * Sends one Ethernet/IPv4/UDP frame, 198.18.0.1:9 -> 198.18.0.2:9 (the
 * benchmarking range), over and over out of one interface: an AF_PACKET
 * socket that receives nothing (protocol 0), a send buffer forced large,
 * sendmmsg() of a batch at a time. Full speed by default; with a rate, it
 * sends what is due whenever it wakes, so the frames come evenly spaced in
 * small batches rather than in large bursts.
 *
 *   l2gen IFACE DST_MAC SRC_MAC [FRAME_LEN=60] [RATE_PPS=0] [BATCH=256]
 *
 * Runs until SIGINT or SIGTERM, then prints one line: sent=N seconds=S.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static double monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_mac(const char *text, uint8_t *mac)
{
	unsigned v[6];

	if (sscanf(text, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* the frame: Ethernet, IPv4 (header checksum), UDP (no checksum), zero payload */
static void build_frame(uint8_t *f, unsigned len, const uint8_t *dst, const uint8_t *src)
{
	static const uint8_t saddr[4] = {198, 18, 0, 1}, daddr[4] = {198, 18, 0, 2};
	uint8_t *ip = f + 14, *udp = ip + 20;
	uint32_t sum = 0;

	memset(f, 0, len);
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	put16(f + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, len - 14);
	put16(ip + 6, 0x4000); /* don't fragment */
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, saddr, 4);
	memcpy(ip + 16, daddr, 4);
	for (int i = 0; i < 20; i += 2)
		sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	put16(ip + 10, ~sum & 0xffff);
	put16(udp, 9);
	put16(udp + 2, 9);
	put16(udp + 4, len - 34);
}

int main(int argc, char **argv)
{
	uint8_t dst[6], src[6], frame[1514];
	unsigned len = argc > 4 ? (unsigned)atoi(argv[4]) : 60;
	double rate = argc > 5 ? atof(argv[5]) : 0;
	int batch = argc > 6 ? atoi(argv[6]) : 256;
	struct sockaddr_ll addr;
	struct sigaction sa;
	int fd, sndbuf = 32 << 20;

	if (argc < 4 || read_mac(argv[2], dst) || read_mac(argv[3], src) || len < 60 ||
	    len > sizeof(frame) || rate < 0 || batch < 1 || batch > 1024) {
		fprintf(stderr, "usage: l2gen IFACE DST_MAC SRC_MAC [FRAME_LEN=60..1514] "
				"[RATE_PPS=0] [BATCH=256]\n");
		return 2;
	}
	build_frame(frame, len, dst, src);

	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) {
		perror("l2gen: socket");
		return 1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		perror("l2gen: SO_SNDBUFFORCE");
	memset(&addr, 0, sizeof(addr));
	addr.sll_family = AF_PACKET;
	addr.sll_ifindex = (int)if_nametoindex(argv[1]);
	if (addr.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("l2gen: bind");
		return 1;
	}

	struct iovec iov = {.iov_base = frame, .iov_len = len};
	struct mmsghdr *msgs = calloc((size_t)batch, sizeof(*msgs));
	if (msgs == NULL)
		return 1;
	for (int i = 0; i < batch; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	uint64_t sent = 0;
	double start = monotonic();
	while (!stopping) {
		int n = batch;

		if (rate > 0) {
			double due = rate * (monotonic() - start) - (double)sent;
			if (due < 1) {
				/* sleep until the next frame is due */
				struct timespec ts = {0, (long)((1 - due) / rate * 1e9)};
				nanosleep(&ts, NULL);
				continue;
			}
			if (due < n)
				n = (int)due;
		}
		int r = sendmmsg(fd, msgs, (unsigned)n, 0);
		if (r > 0)
			sent += (uint64_t)r;
		else if (r < 0 && errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
			perror("l2gen: sendmmsg");
			return 1;
		}
	}
	printf("sent=%llu seconds=%.3f\n", (unsigned long long)sent, monotonic() - start);
	return 0;
}
