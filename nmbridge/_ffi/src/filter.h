/*
 * Classic BPF (the language tcpdump's expressions compile to, struct
 * bpf_insn's layout): a program checked once, then run on each frame in place.
 */
#ifndef NMB_FILTER_H
#define NMB_FILTER_H

#include <stdint.h>

#define NMB_BPF_MAXINSNS 4096 /* the longest program accepted, as libpcap's and the kernel's */
#define NMB_BPF_MEMWORDS 16   /* the scratch memory M[] */

/* one instruction, laid out as struct bpf_insn */
struct nmb_bpf_insn {
	uint16_t code;
	uint8_t jt;
	uint8_t jf;
	uint32_t k;
};

struct nmb_filter;

/*
 * A filter of the len instructions at insns (copied), after checking that
 * the program can only end in a RET: every opcode known, jumps forward and
 * inside, the last instruction a RET, memory indexes < NMB_BPF_MEMWORDS, no
 * division by a constant 0, 1 <= len <= NMB_BPF_MAXINSNS. 0, or -EINVAL
 * (the program), -ENOMEM.
 */
int nmb_filter_new(const struct nmb_bpf_insn *insns, uint32_t len, struct nmb_filter **out);
void nmb_filter_free(struct nmb_filter *f);

/*
 * Nonzero iff the program returns nonzero for the frame whose first buflen
 * bytes are at pkt and whose whole length is wirelen (struct nmb_frame_hooks'
 * match). As libpcap's bpf_filter(): a load past buflen makes the program
 * return 0, as does a division by an X of 0; LEN loads wirelen.
 */
int nmb_filter_match(const void *filter, const uint8_t *pkt, uint32_t buflen, uint32_t wirelen);

#endif
