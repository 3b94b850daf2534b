#define NMB_CAPTURE_SNAPLEN_MAX ...
#define NMB_CAPTURE_RING_MIN ...
#define NMB_CAPTURE_RING_MAX ...
struct nmb_capture_config {
	int fd;
	const char *path;
	uint32_t snaplen;
	uint32_t ring_bytes;
	uint64_t file_bytes;
	uint32_t files;
	uint32_t first;
	const char *if_name[2];
};
struct nmb_capture_counts {
	uint64_t written;
	uint64_t lost;
	uint64_t files;
	int error;
	uint32_t file;
};
struct nmb_capture;
int nmb_capture_open(const struct nmb_capture_config *cfg, struct nmb_capture **out);
void nmb_capture_set_filter(struct nmb_capture *c,
			    int (*match)(const void *, const uint8_t *, uint32_t, uint32_t),
			    const void *filter);
int nmb_capture_frame(void *cap, uint32_t dir, const struct iovec *iov, int niov, uint32_t len);
int nmb_capture_error(const struct nmb_capture *c);
void nmb_capture_counts(const struct nmb_capture *c, struct nmb_capture_counts *out);
int nmb_capture_close(struct nmb_capture *c);
void nmb_capture_free(struct nmb_capture *c);
int nmb_capture_file_name(char *buf, uint32_t size, const char *path, uint32_t n, uint32_t files);
