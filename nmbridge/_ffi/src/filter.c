/*
 * A classic BPF interpreter. The program is checked once (nmb_filter_new),
 * so that running it needs no check but the bounds of each load: every path
 * goes forward to a RET, every memory index and constant divisor is sound.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

/* the opcode fields (pcap/bpf.h's values: they are the instruction set) */
enum {
	/* class */
	LD = 0x00, LDX = 0x01, ST = 0x02, STX = 0x03, ALU = 0x04, JMP = 0x05, RET = 0x06,
	MISC = 0x07,
	/* load size */
	W = 0x00, H = 0x08, B = 0x10,
	/* load mode */
	IMM = 0x00, ABS = 0x20, IND = 0x40, MEM = 0x60, LEN = 0x80, MSH = 0xa0,
	/* ALU operation */
	ADD = 0x00, SUB = 0x10, MUL = 0x20, DIV = 0x30, OR = 0x40, AND = 0x50, LSH = 0x60,
	RSH = 0x70, NEG = 0x80, MOD = 0x90, XOR = 0xa0,
	/* jump */
	JA = 0x00, JEQ = 0x10, JGT = 0x20, JGE = 0x30, JSET = 0x40,
	/* operand: the constant k or X; RET's: k or A */
	K = 0x00, X = 0x08, A = 0x10,
	/* misc */
	TAX = 0x00, TXA = 0x80,
};

struct nmb_filter {
	uint32_t len;
	int reads_mem; /* M[] is read: it starts at 0 (else it is left as it is) */
	struct nmb_bpf_insn insns[];
};

/* Whether code is an instruction the interpreter runs (exactly the switch below). */
static int known(uint16_t code)
{
	switch (code) {
	case LD | W | ABS: case LD | H | ABS: case LD | B | ABS:
	case LD | W | IND: case LD | H | IND: case LD | B | IND:
	case LD | W | LEN: case LD | IMM: case LD | MEM:
	case LDX | W | IMM: case LDX | W | MEM: case LDX | W | LEN: case LDX | B | MSH:
	case ST: case STX:
	case ALU | NEG:
	case JMP | JA:
	case RET | K: case RET | A:
	case MISC | TAX: case MISC | TXA:
		return 1;
	}
	if ((code & 0x07) == ALU && code <= 0xff) {
		switch (code & 0xf0) {
		case ADD: case SUB: case MUL: case DIV: case OR: case AND: case LSH: case RSH:
		case MOD: case XOR:
			return 1;
		}
	}
	if ((code & 0x07) == JMP && code <= 0xff) {
		switch (code & 0xf0) {
		case JEQ: case JGT: case JGE: case JSET:
			return 1;
		}
	}
	return 0;
}

static int valid(const struct nmb_bpf_insn *p, uint32_t len)
{
	if (len == 0 || len > NMB_BPF_MAXINSNS)
		return 0;
	for (uint32_t pc = 0; pc < len; pc++) {
		const struct nmb_bpf_insn *in = &p[pc];
		uint64_t left = len - pc - 1; /* instructions after this one */

		if (!known(in->code))
			return 0;
		switch (in->code) {
		case LD | MEM: case LDX | W | MEM: case ST: case STX:
			if (in->k >= NMB_BPF_MEMWORDS)
				return 0;
			break;
		case ALU | DIV | K: case ALU | MOD | K:
			if (in->k == 0)
				return 0;
			break;
		case JMP | JA:
			if (in->k >= left)
				return 0;
			break;
		default:
			if ((in->code & 0x07) == JMP && (in->jt >= left || in->jf >= left))
				return 0;
		}
	}
	return (p[len - 1].code & 0x07) == RET;
}

int nmb_filter_new(const struct nmb_bpf_insn *insns, uint32_t len, struct nmb_filter **out)
{
	struct nmb_filter *f;

	*out = NULL;
	if (insns == NULL || !valid(insns, len))
		return -EINVAL;
	f = malloc(sizeof(*f) + (size_t)len * sizeof(f->insns[0]));
	if (f == NULL)
		return -ENOMEM;
	f->len = len;
	f->reads_mem = 0;
	for (uint32_t pc = 0; pc < len; pc++)
		if (insns[pc].code == (LD | MEM) || insns[pc].code == (LDX | W | MEM))
			f->reads_mem = 1;
	memcpy(f->insns, insns, (size_t)len * sizeof(f->insns[0]));
	*out = f;
	return 0;
}

void nmb_filter_free(struct nmb_filter *f)
{
	free(f);
}

static inline uint32_t get16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A shift by 32 or more leaves nothing (C leaves it undefined). */
static inline uint32_t shl(uint32_t a, uint32_t n)
{
	return n < 32 ? a << n : 0;
}

static inline uint32_t shr(uint32_t a, uint32_t n)
{
	return n < 32 ? a >> n : 0;
}

/* the bytes [off, off + size) are within the frame's first buflen */
#define FITS(off, size) ((uint64_t)(off) + (size) <= buflen)

int nmb_filter_match(const void *filter, const uint8_t *pkt, uint32_t buflen, uint32_t wirelen)
{
	const struct nmb_filter *f = filter;
	const struct nmb_bpf_insn *pc = f->insns;
	uint32_t a = 0, x = 0, mem[NMB_BPF_MEMWORDS];
	uint64_t off;

	if (f->reads_mem)
		memset(mem, 0, sizeof(mem));

	for (;; pc++) {
		uint32_t k = pc->k;

		switch (pc->code) {
		case RET | K:
			return k != 0;
		case RET | A:
			return a != 0;
		case LD | W | ABS:
			if (!FITS(k, 4))
				return 0;
			a = get32(pkt + k);
			break;
		case LD | H | ABS:
			if (!FITS(k, 2))
				return 0;
			a = get16(pkt + k);
			break;
		case LD | B | ABS:
			if (!FITS(k, 1))
				return 0;
			a = pkt[k];
			break;
		case LD | W | IND:
			off = (uint64_t)x + k;
			if (!FITS(off, 4))
				return 0;
			a = get32(pkt + off);
			break;
		case LD | H | IND:
			off = (uint64_t)x + k;
			if (!FITS(off, 2))
				return 0;
			a = get16(pkt + off);
			break;
		case LD | B | IND:
			off = (uint64_t)x + k;
			if (!FITS(off, 1))
				return 0;
			a = pkt[off];
			break;
		case LD | W | LEN:
			a = wirelen;
			break;
		case LD | IMM:
			a = k;
			break;
		case LD | MEM:
			a = mem[k];
			break;
		case LDX | W | IMM:
			x = k;
			break;
		case LDX | W | MEM:
			x = mem[k];
			break;
		case LDX | W | LEN:
			x = wirelen;
			break;
		case LDX | B | MSH:
			if (!FITS(k, 1))
				return 0;
			x = (uint32_t)(pkt[k] & 0x0f) << 2;
			break;
		case ST:
			mem[k] = a;
			break;
		case STX:
			mem[k] = x;
			break;
		case JMP | JA:
			pc += k;
			break;
		case JMP | JEQ | K:
			pc += a == k ? pc->jt : pc->jf;
			break;
		case JMP | JGT | K:
			pc += a > k ? pc->jt : pc->jf;
			break;
		case JMP | JGE | K:
			pc += a >= k ? pc->jt : pc->jf;
			break;
		case JMP | JSET | K:
			pc += a & k ? pc->jt : pc->jf;
			break;
		case JMP | JEQ | X:
			pc += a == x ? pc->jt : pc->jf;
			break;
		case JMP | JGT | X:
			pc += a > x ? pc->jt : pc->jf;
			break;
		case JMP | JGE | X:
			pc += a >= x ? pc->jt : pc->jf;
			break;
		case JMP | JSET | X:
			pc += a & x ? pc->jt : pc->jf;
			break;
		case ALU | ADD | K: a += k; break;
		case ALU | SUB | K: a -= k; break;
		case ALU | MUL | K: a *= k; break;
		case ALU | DIV | K: a /= k; break; /* k != 0: checked */
		case ALU | MOD | K: a %= k; break;
		case ALU | OR | K: a |= k; break;
		case ALU | AND | K: a &= k; break;
		case ALU | XOR | K: a ^= k; break;
		case ALU | LSH | K: a = shl(a, k); break;
		case ALU | RSH | K: a = shr(a, k); break;
		case ALU | ADD | X: a += x; break;
		case ALU | SUB | X: a -= x; break;
		case ALU | MUL | X: a *= x; break;
		case ALU | DIV | X:
			if (x == 0)
				return 0;
			a /= x;
			break;
		case ALU | MOD | X:
			if (x == 0)
				return 0;
			a %= x;
			break;
		case ALU | OR | X: a |= x; break;
		case ALU | AND | X: a &= x; break;
		case ALU | XOR | X: a ^= x; break;
		case ALU | LSH | X: a = shl(a, x); break;
		case ALU | RSH | X: a = shr(a, x); break;
		case ALU | NEG: a = -a; break;
		case MISC | TAX: x = a; break;
		case MISC | TXA: a = x; break;
		default:
			return 0; /* not reached: the program was checked */
		}
	}
}
