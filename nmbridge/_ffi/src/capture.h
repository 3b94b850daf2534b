/*
 * Capture: copies of the frames that cross, written as pcapng by a thread of
 * its own. The loop's side (nmb_capture_frame, the engine's capture hook)
 * only copies each frame, as the Enhanced Packet Block it becomes, into a
 * bounded single-producer/single-consumer ring: it never blocks, never
 * allocates, and says 0 when the ring is full (the engine counts that frame
 * as capture_dropped; it crosses all the same). The writer hands the blocks
 * to writev() straight from the ring, after the file's Section Header Block
 * and one Interface Description Block per direction (Ethernet, nanosecond
 * timestamps). Each block has its direction in epb_flags: frames from port 0 on
 * interface 0 flagged inbound, frames from port 1 on interface 1 flagged
 * outbound (port 0 is the wire side, as tcpdump sees an interface).
 * Rotation as tcpdump's -C/-W: each file a whole pcapng.
 */
#ifndef NMB_CAPTURE_H
#define NMB_CAPTURE_H

#include <stdint.h>
#include <sys/uio.h>

#define NMB_CAPTURE_SNAPLEN_MAX 262144u /* tcpdump's default and largest snap length */
#define NMB_CAPTURE_RING_MIN (1u << 20)
#define NMB_CAPTURE_RING_MAX (1u << 30)

struct nmb_capture_config {
	int fd;              /* the first file, open for writing (the capture owns it from now on) */
	const char *path;    /* the name given (FILE): the next files' names are made from it;
				NULL: no rotation (standard output) */
	uint32_t snaplen;    /* bytes of each frame kept, 1..NMB_CAPTURE_SNAPLEN_MAX */
	uint32_t ring_bytes; /* the ring's size, rounded up to a power of two */
	uint64_t file_bytes; /* a new file once the current one is larger (0: never) */
	uint32_t files;      /* with file_bytes: a ring of this many files (0: no limit) */
	uint32_t first;      /* the number of the open file (fd) in that sequence */
	const char *if_name[2]; /* the interface names of the two directions */
};

struct nmb_capture_counts {
	uint64_t written;    /* frames written to a file */
	uint64_t lost;       /* frames taken into the ring but not written (after a write error) */
	uint64_t files;      /* files opened, the first included */
	int error;           /* the writer's errno (0: none): it stopped writing then */
	uint32_t file;       /* the number of the file being written */
};

struct nmb_capture;

/* Start the writer; 0, or -errno (the fd is closed then too). */
int nmb_capture_open(const struct nmb_capture_config *cfg, struct nmb_capture **out);
/* The capture's own filter (match NULL: none): a frame it refuses is not copied (-1). */
void nmb_capture_set_filter(struct nmb_capture *c,
			    int (*match)(const void *, const uint8_t *, uint32_t, uint32_t),
			    const void *filter);
/* The engine's capture hook: 1 copied, 0 not (the ring full, or the writer failed), -1 filtered out. */
int nmb_capture_frame(void *cap, uint32_t dir, const struct iovec *iov, int niov, uint32_t len);
/* The writer's error so far (errno, 0: none); any thread. */
int nmb_capture_error(const struct nmb_capture *c);
void nmb_capture_counts(const struct nmb_capture *c, struct nmb_capture_counts *out);
/* Write what the ring still holds, stop the writer, close the file: 0 or -errno of its error. */
int nmb_capture_close(struct nmb_capture *c);
void nmb_capture_free(struct nmb_capture *c);
/* The name of file number n of FILE as tcpdump -C/-W names it (files: -W, 0 if none). */
int nmb_capture_file_name(char *buf, uint32_t size, const char *path, uint32_t n, uint32_t files);

#endif
