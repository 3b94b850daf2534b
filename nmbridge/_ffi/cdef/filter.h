#define NMB_BPF_MAXINSNS ...
#define NMB_BPF_MEMWORDS ...
struct nmb_bpf_insn {
	uint16_t code;
	uint8_t jt;
	uint8_t jf;
	uint32_t k;
};
struct nmb_filter;
int nmb_filter_new(const struct nmb_bpf_insn *insns, uint32_t len, struct nmb_filter **out);
void nmb_filter_free(struct nmb_filter *f);
int nmb_filter_match(const void *filter, const uint8_t *pkt, uint32_t buflen, uint32_t wirelen);
