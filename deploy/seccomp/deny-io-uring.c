// deny-io-uring: run a command under a seccomp filter that answers io_uring_setup,
// io_uring_enter and io_uring_register with EPERM, as containerd's RuntimeDefault profile does
// (it does not list them, and its default action is "errno EPERM"). Everything else is allowed.
//
//   cc -O2 -o deny-io-uring deny-io-uring.c && ./deny-io-uring ringway --listen ...
//
// No libseccomp: a five-instruction classic BPF program loaded with prctl(PR_SET_SECCOMP), which
// needs no privilege once PR_SET_NO_NEW_PRIVS is set. The filter is inherited across execve and
// by every thread the command starts.
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture's AUDIT_ARCH_* value"
#endif

// io_uring_setup, io_uring_enter and io_uring_register are 425, 426 and 427 on every
// architecture (they were added after the syscall tables were unified).
#define DENY(nr) \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s command [args...]\n", argv[0]);
        return 2;
    }
    struct sock_filter filter[] = {
        // A foreign-architecture syscall (e.g. 32-bit int 0x80) has other numbers: refuse it.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(425),
        DENY(426),
        DENY(427),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("prctl(PR_SET_NO_NEW_PRIVS)");
        return 1;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("prctl(PR_SET_SECCOMP)");
        return 1;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "execvp %s: %s\n", argv[1], strerror(errno));
    return 127;
}
