#!/usr/bin/env bash
# Runs the kernel-TLS test (tests/tls.rs, ktls_takes_over_or_falls_back_cleanly) for real, on a
# kernel that has the `tls` module, where the machine's own kernel does not: a Debian kernel
# booted under qemu with an initramfs holding busybox, the kernel's crypto and tls modules and
# the test binary. RINGWAY_TEST_EXPECT_KTLS makes the test fail unless every connection went to
# the kernel. Software emulation (TCG): nested KVM does not boot here. About a minute.
#
#   bash scripts/ktls-qemu.sh            # exits 0 when the test passed inside the VM
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in qemu-system-x86_64 busybox depmod cpio; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      qemu-system-x86 busybox-static kmod cpio >/dev/null
    break
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The test binary, as cargo builds it.
binary=$(cargo test --test tls --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tls" and m.get("executable"):
        print(m["executable"])')

# A Debian kernel and its modules, unpacked (not installed).
package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
(cd "$work" && apt-get download -qq "$package" 2>/dev/null)
dpkg-deb -x "$work"/linux-image-*.deb "$work/root"
version=$(ls "$work/root/lib/modules")
depmod -b "$work/root" "$version"

init="$work/initramfs"
mkdir -p "$init"/{bin,sbin,proc,sys,dev,tmp}
modules="$init/lib/modules/$version"
for dir in crypto arch/x86/crypto lib/crypto net/tls; do
  mkdir -p "$modules/kernel/$dir"
  cp -r "$work/root/lib/modules/$version/kernel/$dir/." "$modules/kernel/$dir/"
done
cp "$work/root/lib/modules/$version"/modules.* "$modules/"
cp "$(command -v busybox)" "$init/bin/"
cp "$binary" "$init/bin/tls-test"
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  mkdir -p "$init$(dirname "$lib")"
  cp -L "$lib" "$init$lib"
done
cat >"$init/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
ln -s /bin/busybox /sbin/modprobe
echo /sbin/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
echo "kernel: $(uname -r)"
modprobe tls && echo "tls module loaded"
cd /tmp
RINGWAY_TEST_EXPECT_KTLS=1 /bin/tls-test ktls --test-threads=1
echo "test exit=$?"
echo "modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
poweroff -f
EOF
chmod +x "$init/init"
(cd "$init" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initramfs.gz")

timeout 600 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 -nographic \
  -no-reboot -kernel "$work"/root/boot/vmlinuz-* -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 quiet panic=-1" | tee "$work/console.log" | grep -v '^\[' || true
grep -q "test exit=0" "$work/console.log"
