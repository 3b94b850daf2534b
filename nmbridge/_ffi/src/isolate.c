/*
 * Taking an interface away from the host stack, as netmap mode does, for
 * emulated packet: ports: a two-instruction BPF program on the interface's
 * tcx ingress hook answers TC_ACT_SHOT to every frame. AF_PACKET sockets
 * see frames before that hook runs, so the bridge still gets them; the
 * kernel's protocols no longer do. The hook is held by a BPF link whose
 * only reference is the fd returned here: closing it, or the process dying
 * however it dies, gives the interface back.
 *
 * Built on the uapi numbers of Linux 6.6+ (tcx), declared here so that
 * older build headers do not matter; an older kernel answers EINVAL.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "isolate.h"

#define BPF_PROG_LOAD_CMD 5
#define BPF_LINK_CREATE_CMD 28
#define BPF_PROG_TYPE_SCHED_CLS_ 3
#define BPF_TCX_INGRESS_ 46
#define TC_ACT_SHOT_ 2
#define BPF_F_BEFORE_ (1U << 3) /* with no relative program: first of the hook's programs */

struct bpf_insn_ {
	uint8_t code;
	uint8_t regs; /* dst_reg:4, src_reg:4 */
	int16_t off;
	int32_t imm;
};

/* the leading fields of union bpf_attr for BPF_PROG_LOAD */
struct bpf_prog_load_attr_ {
	uint32_t prog_type;
	uint32_t insn_cnt;
	uint64_t insns;
	uint64_t license;
	uint32_t log_level;
	uint32_t log_size;
	uint64_t log_buf;
	uint32_t kern_version;
	uint32_t prog_flags;
	char prog_name[16];
};

/* the leading fields of union bpf_attr for BPF_LINK_CREATE */
struct bpf_link_create_attr_ {
	uint32_t prog_fd;
	uint32_t target_ifindex;
	uint32_t attach_type;
	uint32_t flags;
	uint32_t relative_fd;
	uint32_t pad;
	uint64_t expected_revision;
};

static long bpf(int cmd, void *attr, unsigned int size)
{
	return syscall(SYS_bpf, cmd, attr, size);
}

int nmb_isolate_ingress(int ifindex, int *link_fd_out)
{
	/* r0 = TC_ACT_SHOT; exit */
	static const struct bpf_insn_ prog[] = {
		{0xb7, 0x00, 0, TC_ACT_SHOT_}, /* BPF_ALU64 | BPF_MOV | BPF_K */
		{0x95, 0x00, 0, 0},            /* BPF_JMP | BPF_EXIT */
	};
	static const char license[] = "BSD";
	struct bpf_prog_load_attr_ load;
	struct bpf_link_create_attr_ link;
	int prog_fd, link_fd, err;

	memset(&load, 0, sizeof(load));
	load.prog_type = BPF_PROG_TYPE_SCHED_CLS_;
	load.insn_cnt = sizeof(prog) / sizeof(prog[0]);
	load.insns = (uint64_t)(uintptr_t)prog;
	load.license = (uint64_t)(uintptr_t)license;
	memcpy(load.prog_name, "nmbridge_drop", sizeof("nmbridge_drop"));
	prog_fd = (int)bpf(BPF_PROG_LOAD_CMD, &load, sizeof(load));
	if (prog_fd < 0)
		return -errno;

	memset(&link, 0, sizeof(link));
	link.prog_fd = (uint32_t)prog_fd;
	link.target_ifindex = (uint32_t)ifindex;
	link.attach_type = BPF_TCX_INGRESS_;
	link.flags = BPF_F_BEFORE_; /* ahead of any program that would let frames through */
	link_fd = (int)bpf(BPF_LINK_CREATE_CMD, &link, sizeof(link));
	err = errno;
	close(prog_fd); /* the link holds the program */
	if (link_fd < 0)
		return -err;
	*link_fd_out = link_fd;
	return 0;
}
