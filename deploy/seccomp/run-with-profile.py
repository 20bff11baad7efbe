#!/usr/bin/python3
"""Run a command under an OCI-format seccomp profile, the way runc applies a Localhost profile.

    run-with-profile.py [--without-io-uring] PROFILE.json -- COMMAND [ARGS...]

Used by demo-fallback.sh to check that ringway-io-uring.json lets ringway start and serve on
io_uring, and that the same profile without the three io_uring syscalls (which is what
containerd's RuntimeDefault is for a container with no capabilities) makes it fall back to
epoll. It needs libseccomp's Python binding for the system Python (Debian/Ubuntu:
`apt-get install python3-seccomp`); hence /usr/bin/python3.

As runc does: the default action and errno come from the profile, every listed architecture
is added, a syscall name this libseccomp does not know for an architecture is skipped, and the
conditions of one entry must all hold. No privilege is needed (no_new_privs is set).
"""
import json
import os
import sys

import seccomp

IO_URING = {"io_uring_setup", "io_uring_enter", "io_uring_register"}

ARCHES = {
    "SCMP_ARCH_X86_64": seccomp.Arch.X86_64,
    "SCMP_ARCH_X86": seccomp.Arch.X86,
    "SCMP_ARCH_X32": seccomp.Arch.X32,
    "SCMP_ARCH_AARCH64": seccomp.Arch.AARCH64,
    "SCMP_ARCH_ARM": seccomp.Arch.ARM,
}

OPS = {
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_ret)
    if name == "SCMP_ACT_KILL":
        return seccomp.KILL
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    raise SystemExit(f"unsupported action {name}")


def build_filter(profile, without_io_uring):
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet", 1))
    f = seccomp.SyscallFilter(default)
    for arch in profile.get("architectures", []):
        if arch in ARCHES and ARCHES[arch] != seccomp.Arch.NATIVE:
            try:
                f.add_arch(ARCHES[arch])
            except Exception:
                pass  # already present (the native one)
    for entry in profile["syscalls"]:
        act = action(entry["action"], entry.get("errnoRet", 1))
        args = [
            seccomp.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in entry.get("args", [])
        ]
        for name in entry["names"]:
            if without_io_uring and name in IO_URING:
                continue
            try:
                f.add_rule(act, name, *args)
            except (RuntimeError, ValueError, OSError):
                pass  # not a syscall on these architectures, as runc skips it
    return f


def main():
    argv = sys.argv[1:]
    without_io_uring = False
    if argv and argv[0] == "--without-io-uring":
        without_io_uring = True
        argv = argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit(__doc__)
    with open(argv[0]) as f:
        profile = json.load(f)
    command = argv[2:]
    build_filter(profile, without_io_uring).load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
