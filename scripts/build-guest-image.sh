#!/bin/bash
# Build the kvmpanel base guest image: Debian 12 (bookworm) with cloud-init,
# bootable with BIOS/GRUB, as a compressed qcow2 that VM disks use as their
# backing file.  Recipe: /work/shared/GUEST-IMAGE.md (mmdebstrap into a folder,
# mkfs.ext4 -d straight into a raw disk, GRUB core.img written by dd; no loop
# devices, no mounts).
#
# Usage: scripts/build-guest-image.sh [OUTPUT_QCOW2]
#   default OUTPUT_QCOW2: ${KVMPANEL_CACHE:-/var/cache/kvmpanel}/images/debian-12-cloud.qcow2
#   writes OUTPUT_QCOW2.sha256 (hex digest only) and OUTPUT_QCOW2.recipe (stamp).
#
# Environment:
#   KVMPANEL_CACHE         cache root (default /var/cache/kvmpanel); .debs are
#                          kept in $KVMPANEL_CACHE/debs so rebuilds need no network
#   KVMPANEL_REFRESH_DEBS  set to 1 to download from the mirror even when the
#                          .deb cache is complete (to pick up package updates)
#
# Runs as root on a Debian 12 host.
set -euo pipefail
shopt -s inherit_errexit

# Bump whenever anything below changes what ends up in the image, so that a
# cached image built by an older recipe is rebuilt.
readonly RECIPE_VERSION=1

readonly SUITE=bookworm
readonly FALLBACK_MIRROR=http://deb.debian.org/debian
readonly DISK_MB=2048          # virtual size of the base image; overlays may be larger
readonly PART_START_SECTOR=2048
readonly GRUB_MODULES=(biosdisk part_msdos ext2 normal configfile linux search
                       search_fs_uuid echo test serial terminal gzio)
readonly HOST_PACKAGES=(mmdebstrap dpkg-dev grub-pc-bin grub-common fdisk
                        e2fsprogs qemu-utils)
readonly GUEST_PACKAGES=(systemd-sysv udev dbus linux-image-cloud-amd64
                         initramfs-tools cloud-init cloud-guest-utils
                         openssh-server ifupdown isc-dhcp-client
                         qemu-guest-agent netbase iproute2 sudo less)
# Keep the image small: no man pages, translations or docs (copyright files
# stay, for licence compliance).  dpkg keeps applying these inside the guest.
readonly DPKG_OPTS=(
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/locale/*'
    'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/info/*'
)

CACHE_DIR=${KVMPANEL_CACHE:-/var/cache/kvmpanel}
DEB_DIR=$CACHE_DIR/debs
# Written into the .deb cache after a successful download; names the package
# set, so a changed GUEST_PACKAGES list goes back to the mirror once.
DEBS_STAMP=$DEB_DIR/.kvmpanel-complete
# Archive priorities of the cached packages (dpkg-scanpackages override file).
# The Debian archive overrides the Priority inside many .debs (apt, gpgv, ...
# say "important" but are "required"), and mmdebstrap's minbase selects by
# priority: indexed without this file, the offline image would lack apt.
DEBS_OVERRIDE=$DEB_DIR/override

SELF=$(realpath "$0")   # hooks call the script again by this path
WORK_DIR=""      # temporary build folder, removed on exit
TMP_OUTPUT=""    # image being written next to the output, removed on failure

log() {
    printf '[build-guest-image %4ds] %s\n' "$SECONDS" "$*"
}

die() {
    printf 'build-guest-image: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^# Runs as root/s/^# \{0,1\}//p' "$0"
}

# --- cache check -----------------------------------------------------------

recipe_stamp_of() {
    printf '%s.recipe' "$1"
}

# True when OUTPUT exists and was published by this recipe version: the stamp
# records the recipe version and the digest that was written to OUTPUT.sha256.
# Cheap on purpose (no hashing of the image) so a cached call returns at once.
is_cached() {
    local output=$1 stamp digest
    stamp=$(recipe_stamp_of "$output")
    [[ -f $output && -f $output.sha256 && -f $stamp ]] || return 1
    digest=$(<"$output.sha256")
    [[ $(<"$stamp") == "$(recipe_stamp_text "$digest")" ]]
}

recipe_stamp_text() {
    printf 'RECIPE_VERSION=%s\nSHA256=%s' "$RECIPE_VERSION" "$1"
}

# --- host preparation --------------------------------------------------------

ensure_host_packages() {
    local missing=() pkg
    for pkg in "${HOST_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh host may have empty package lists; update only then.
    apt-get install -y --no-install-recommends "${missing[@]}" ||
        { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
}

# Only one build at a time: two builds would fight over the .deb cache and the
# output name.  A cached image may appear while we wait, hence the re-check.
take_build_lock() {
    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/.build-guest-image.lock"
    flock 9
}

# Unmount whatever a killed mmdebstrap may have left mounted under DIR (its
# /proc, /dev, or the read-only bind mount of the .deb cache), then delete it
# without ever crossing into another file system.
remove_work_dir() {
    local dir=$1 mnt
    [[ -d $dir ]] || return 0
    findmnt -rn -o TARGET | { grep -F -- "$dir/" || true; } | sort -r | while read -r mnt; do
        umount -l "$mnt" || true
    done
    rm -rf --one-file-system -- "$dir"
}

cleanup() {
    local status=$?
    [[ -n $TMP_OUTPUT ]] && rm -f -- "$TMP_OUTPUT"
    [[ -n $WORK_DIR ]] && remove_work_dir "$WORK_DIR"
    ((status == 0)) || printf 'build-guest-image: failed (exit %d) after %d s\n' "$status" "$SECONDS" >&2
}

make_work_dir() {
    local stale
    # We hold the lock, so any older build folder belongs to a killed run.
    for stale in "$CACHE_DIR"/build.*; do
        [[ -d $stale ]] && remove_work_dir "$stale"
    done
    WORK_DIR=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    # apt downloads as user _apt into the root file system below this folder;
    # mktemp's 0700 would make it fall back to unsandboxed downloads as root.
    chmod 0755 "$WORK_DIR"
}

# --- package source ----------------------------------------------------------

# First http(s) URI that this host's apt uses for the plain bookworm suite,
# from deb822 .sources files or one-line sources.list entries.
host_mirror() {
    local files=() f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && files+=("$f")
    done
    if ((${#files[@]})); then
        awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^[ \t]*#/) continue
                    split($i, kv, ":"); key = tolower(kv[1])
                    val = substr($i, length(kv[1]) + 2)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                if (enabled ~ /no/ || (" " types " ") !~ /[ \t]deb[ \t]/) next
                if ((" " suites " ") !~ ("[ \t]" suite "[ \t]")) next
                n = split(uris, u, /[ \t]+/)
                for (j = 1; j <= n; j++) if (u[j] ~ /^https?:\/\//) { print u[j]; exit }
            }' "${files[@]}"
    fi
    if [[ -f /etc/apt/sources.list ]]; then
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' /etc/apt/sources.list |
            awk -v suite="$SUITE" '$1 == "deb" && $3 == suite && $2 ~ /^https?:\/\// { print $2 }'
    fi
}

choose_mirror() {
    local mirror
    mirror=$(host_mirror)
    mirror=${mirror%%$'\n'*}
    printf '%s\n' "${mirror:-$FALLBACK_MIRROR}"
}

# The .deb cache can replace the mirror when a previous download of the same
# package set completed.
debs_complete() {
    [[ ${KVMPANEL_REFRESH_DEBS:-0} != 1 && -f $DEBS_STAMP && -s $DEBS_OVERRIDE ]] &&
        [[ $(<"$DEBS_STAMP") == "${GUEST_PACKAGES[*]}" ]]
}

# Turn the .deb cache into a flat apt repository.  mmdebstrap needs a Release
# whose Suite/Codename match the requested suite or it finds nothing to extract.
# With "force" unset the index is only rebuilt when a .deb is newer than it.
index_deb_cache() {
    local force=${1:-} newer_deb
    newer_deb=$(find "$DEB_DIR" -maxdepth 1 \( -name '*.deb' -o -name override \) \
        -newer "$DEB_DIR/Release" -print -quit 2>/dev/null || true)
    if [[ -z $force && -f $DEB_DIR/Packages && -f $DEB_DIR/Release && -z $newer_deb ]]; then
        return 0
    fi
    log "indexing the .deb cache as a flat repository"
    (
        cd "$DEB_DIR"
        dpkg-scanpackages -m . override > Packages.new
        mv Packages.new Packages
        {
            printf 'Origin: kvmpanel\nLabel: kvmpanel deb cache\n'
            printf 'Suite: %s\nCodename: %s\n' "$SUITE" "$SUITE"
            printf 'Architectures: amd64 all\nDate: %s\n' "$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
            printf 'SHA256:\n %s %s Packages\n' "$(sha256sum < Packages | cut -d' ' -f1)" "$(stat -c %s Packages)"
        } > Release.new
        mv Release.new Release
    )
}

# --- root file system --------------------------------------------------------

q() {
    printf '%q' "$1"
}

build_rootfs() {
    local rootfs=$1 root_uuid=$2 mirror_args=() cache_args=() dpkg_args=() opt offline=0
    for opt in "${DPKG_OPTS[@]}"; do
        dpkg_args+=("--dpkgopt=$opt")
    done
    mkdir -p "$DEB_DIR"
    debs_complete && offline=1
    if ((offline)); then
        index_deb_cache
        log "building the root file system offline from $DEB_DIR"
        # The hook bind-mounts file:// mirrors into the chroot so dpkg can
        # read the .debs, and unmounts them before our customize hook runs.
        cache_args=(--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount)
        mirror_args=("deb [trusted=yes] file://$DEB_DIR ./")
    else
        local mirror
        mirror=$(choose_mirror)
        log "building the root file system from $mirror (caching .debs in $DEB_DIR)"
        # Seed apt's archive folder from the cache and copy every .deb back
        # afterwards; essential/unlink would otherwise delete the essential
        # packages before sync-out sees them.
        # shellcheck disable=SC2016  # "$1" is for mmdebstrap's sh, not for us
        cache_args=(--skip=essential/unlink
                    '--setup-hook=mkdir -p "$1/var/cache/apt/archives/"'
                    "--setup-hook=sync-in $(q "$DEB_DIR") /var/cache/apt/archives/"
                    "--customize-hook=sync-out /var/cache/apt/archives $(q "$DEB_DIR")"
                    "--customize-hook=bash $(q "$SELF") --record-priorities \"\$1\" $(q "$DEB_DIR")")
        mirror_args=("$mirror")
    fi
    mmdebstrap --variant=minbase --mode=root --format=directory \
        --include="$(IFS=,; echo "${GUEST_PACKAGES[*]}")" \
        "${dpkg_args[@]}" "${cache_args[@]}" \
        "--essential-hook=bash $(q "$SELF") --write-initramfs-conf \"\$1\"" \
        "--customize-hook=bash $(q "$SELF") --customize-rootfs \"\$1\" $(q "$root_uuid") $(q "$DEB_DIR")" \
        "$SUITE" "$rootfs" "${mirror_args[@]}"
    if ((!offline)); then
        # sync-out keeps the mirror's mtimes, so "newer than the index" cannot
        # be trusted here: always re-index after a download.
        index_deb_cache force
        printf '%s' "${GUEST_PACKAGES[*]}" > "$DEBS_STAMP"
    fi
}

# Runs as a customize hook of an online build, after sync-out and before
# mmdebstrap deletes the package lists: keeps the archive's Priority/Section of
# every cached package as the override file for index_deb_cache.
record_priorities() {
    local root=$1 deb_dir=$2 lists=() f
    for f in "$root"/var/lib/apt/lists/*_Packages*; do
        [[ -f $f ]] && lists+=("$f")
    done
    ((${#lists[@]})) || die "no package lists in $root to read priorities from"
    # apt-helper cat-file reads the lists whether apt stored them compressed or not.
    /usr/lib/apt/apt-helper cat-file "${lists[@]}" |
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
                 pkg = prio = sect = ""
                 for (i = 1; i <= NF; i++) {
                     if ($i ~ /^Package: /) pkg = substr($i, 10)
                     else if ($i ~ /^Priority: /) prio = substr($i, 11)
                     else if ($i ~ /^Section: /) sect = substr($i, 10)
                 }
                 if (pkg != "" && prio != "" && sect != "") print pkg, prio, sect
             }' |
        awk 'NR == FNR { cached[$1]; next } ($1 in cached) && !seen[$1]++' \
            <(find "$deb_dir" -maxdepth 1 -name '*.deb' -printf '%f\n' | cut -d_ -f1) - \
        > "$deb_dir/override.new"
    [[ -s $deb_dir/override.new ]] || die "found no priorities for the cached packages"
    mv -f "$deb_dir/override.new" "$deb_dir/override"
}

# Runs as mmdebstrap's essential hook, before the kernel and initramfs-tools
# are installed.  For / the initramfs fsck hook probes the real device instead
# of reading fstab; in a chroot there is none, so without FSTYPE the initramfs
# gets no fsck ("fsck not present, so skipping root file system" at boot).
write_initramfs_conf() {
    local root=$1
    mkdir -p "$root/etc/initramfs-tools/conf.d"
    printf '# kvmpanel: root is ext4 (cannot be probed at build time)\nFSTYPE=ext4\n' \
        > "$root/etc/initramfs-tools/conf.d/kvmpanel-fstype"
}

# Runs as mmdebstrap's customize hook (the script calls itself), after all
# packages are installed and before mmdebstrap's own cleanup.
customize_rootfs() {
    local root=$1 root_uuid=$2 deb_dir=$3
    [[ -d $root/etc && -n $root_uuid ]] || die "customize hook called without a root file system"

    # Every clone must get its own identity on first boot: systemd creates the
    # machine id, cloud-init generates new SSH host keys.
    : > "$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*

    # mmdebstrap copied the build host's name and resolver; neither belongs in
    # a guest (DHCP or cloud-init fills them in).
    echo localhost > "$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
    : > "$root/etc/resolv.conf"
    chmod 0644 "$root/etc/resolv.conf"   # keeps the host file's mode otherwise

    # The build may have used a host-local mirror or the file:// .deb cache;
    # guests get the public mirror (cloud-init may rewrite this on first boot).
    cat > "$root/etc/apt/sources.list" <<EOF
deb $FALLBACK_MIRROR $SUITE main
deb $FALLBACK_MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
    remove_mirror_mountpoint "$root" "$deb_dir"

    printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$root_uuid" > "$root/etc/fstab"

    # Without the locale line cloud-init finishes with "status: error" (no
    # locales are installed); NoCloud is the seed ISO the panel attaches, None
    # lets a VM without a seed still boot.
    cat > "$root/etc/cloud/cloud.cfg.d/99-kvmpanel.cfg" <<'EOF'
# Written by kvmpanel scripts/build-guest-image.sh
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
EOF

    # e2scrub_reap only matters with LVM snapshots; it costs boot time.
    ln -sf /dev/null "$root/etc/systemd/system/e2scrub_reap.service"

    setup_power_button "$root"
    enable_guest_agent "$root"
    write_grub_cfg "$root" "$root_uuid"
}

# The offline build bind-mounts the .deb cache at the same path inside the
# chroot; drop the (now empty) mount point folders that no package owns.
remove_mirror_mountpoint() {
    local root=$1 dir=$2
    while [[ $dir != / && -d $root$dir ]]; do
        dpkg-query --admindir="$root/var/lib/dpkg" -S "$dir" >/dev/null 2>&1 && break
        rmdir -- "$root$dir" 2>/dev/null || break
        dir=$(dirname "$dir")
    done
}

# The panel's "shut down" sends an ACPI power button press first.  systemd-logind
# (in the systemd package, so in minbase) powers off on it by default; the
# drop-in makes that explicit so no later package default can change it.
setup_power_button() {
    local root=$1
    [[ -x $root/usr/lib/systemd/systemd-logind || -x $root/lib/systemd/systemd-logind ]] ||
        die "systemd-logind missing from the image: ACPI shutdown would not work"
    mkdir -p "$root/etc/systemd/logind.conf.d"
    printf '# kvmpanel: ACPI power button = clean shutdown\n[Login]\nHandlePowerKey=poweroff\n' \
        > "$root/etc/systemd/logind.conf.d/50-kvmpanel-power-key.conf"
}

# The Debian unit is normally "static" (udev starts it when the
# org.qemu.guest_agent.0 port appears); enable it only if it comes disabled.
enable_guest_agent() {
    local root=$1 state
    state=$(systemctl --root="$root" is-enabled qemu-guest-agent.service 2>/dev/null || true)
    case $state in
        static | enabled | indirect | generated) ;;
        disabled) systemctl --root="$root" enable qemu-guest-agent.service ;;
        *) die "qemu-guest-agent.service not found in the image (state: ${state:-none})" ;;
    esac
}

# GRUB is not installed in the guest: core.img (built on the host) embeds all
# modules and reads only this file.  /vmlinuz and /initrd.img are the symlinks
# Debian keeps pointing at the newest kernel, so guest kernel upgrades work.
write_grub_cfg() {
    local root=$1 root_uuid=$2
    [[ -L $root/vmlinuz || -f $root/vmlinuz ]] || die "no /vmlinuz in the image"
    [[ -L $root/initrd.img || -f $root/initrd.img ]] || die "no /initrd.img in the image"
    mkdir -p "$root/boot/grub"
    cat > "$root/boot/grub/grub.cfg" <<EOF
# Written by kvmpanel scripts/build-guest-image.sh
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
set default=0
set timeout=1
menuentry 'Debian GNU/Linux 12 (bookworm)' {
    search --no-floppy --fs-uuid --set=root $root_uuid
    linux /vmlinuz root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200n8
    initrd /initrd.img
}
EOF
}

# --- disk --------------------------------------------------------------------

# Partitioned raw disk with the file system written straight from the folder
# (mkfs.ext4 -d at the partition's byte offset) and GRUB's boot sector and
# core.img written by dd; then compressed to qcow2.
make_disk() {
    local rootfs=$1 root_uuid=$2 qcow2=$3
    local raw=$WORK_DIR/disk.raw core=$WORK_DIR/core.img
    local offset=$((PART_START_SECTOR * 512))
    local fs_kib=$(((DISK_MB * 1024) - offset / 1024))

    log "writing the raw disk (${DISK_MB} MiB)"
    truncate -s "${DISK_MB}M" "$raw"
    echo "start=$PART_START_SECTOR, type=83, bootable" | sfdisk --quiet --label dos "$raw"
    mkfs.ext4 -q -F -L vps-root -U "$root_uuid" -d "$rootfs" -E offset="$offset" "$raw" "${fs_kib}k"

    grub-mkimage -O i386-pc -o "$core" -p '(hd0,msdos1)/boot/grub' "${GRUB_MODULES[@]}"
    (($(stat -c %s "$core") <= (PART_START_SECTOR - 1) * 512)) ||
        die "GRUB core.img does not fit before the first partition"
    # 440 bytes: the boot code only, so the partition table stays intact.
    dd if=/usr/lib/grub/i386-pc/boot.img of="$raw" bs=440 count=1 conv=notrunc status=none
    dd if="$core" of="$raw" bs=512 seek=1 conv=notrunc status=none

    log "compressing to qcow2"
    qemu-img convert -O qcow2 -c -o compression_type=zstd "$raw" "$qcow2"
}

# Never overwrite the published image in place: running VMs may use it as a
# backing file.  mv gives the new image a new inode; the old one lives on
# until its last user closes it.  qcow2 overlays record their backing file by
# path, though: a VM restarted after a rebuild would read the new base under
# its old overlay.  Overlays should therefore sit on a copy named after
# OUTPUT.sha256 (e.g. a volume in the libvirt pool), never on this path.
publish() {
    local built=$1 output=$2 digest
    chmod 0644 "$built"   # mktemp made it 0600; libvirt's qemu user must read it
    digest=$(sha256sum "$built" | cut -d' ' -f1)
    rm -f -- "$(recipe_stamp_of "$output")"
    mv -f -- "$built" "$output"
    TMP_OUTPUT=""
    printf '%s\n' "$digest" > "$output.sha256.tmp"
    mv -f -- "$output.sha256.tmp" "$output.sha256"
    recipe_stamp_text "$digest" > "$(recipe_stamp_of "$output").tmp"
    mv -f -- "$(recipe_stamp_of "$output").tmp" "$(recipe_stamp_of "$output")"
}

# --- main --------------------------------------------------------------------

main() {
    # Hook entry points: mmdebstrap runs this script again inside a build.
    case ${1:-} in
        --customize-rootfs) shift; customize_rootfs "$@"; return ;;
        --record-priorities) shift; record_priorities "$@"; return ;;
        --write-initramfs-conf) shift; write_initramfs_conf "$@"; return ;;
    esac
    case ${1:-} in
        -h | --help) usage; return 0 ;;
        -*) usage >&2; return 2 ;;
    esac
    (($# <= 1)) || { usage >&2; return 2; }

    local output
    output=$(realpath -m -- "${1:-$CACHE_DIR/images/debian-12-cloud.qcow2}")
    if is_cached "$output"; then
        printf '%s\n' "$output"
        return 0
    fi

    ((EUID == 0)) || die "must run as root"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ensure_host_packages
    take_build_lock
    if is_cached "$output"; then
        printf '%s\n' "$output"
        return 0
    fi
    make_work_dir
    mkdir -p "$(dirname "$output")"

    local root_uuid rootfs=$WORK_DIR/rootfs
    root_uuid=$(</proc/sys/kernel/random/uuid)
    log "building $output (recipe $RECIPE_VERSION, root fs UUID $root_uuid)"
    build_rootfs "$rootfs" "$root_uuid"
    log "root file system: $(du -sh --one-file-system "$rootfs" | cut -f1)"

    TMP_OUTPUT=$(mktemp "$(dirname "$output")/.$(basename "$output").XXXXXX")
    make_disk "$rootfs" "$root_uuid" "$TMP_OUTPUT"
    publish "$TMP_OUTPUT" "$output"

    log "image: $output ($(du -h "$output" | cut -f1) on disk)"
    log "done in $SECONDS s"
    printf '%s\n' "$output"
}

main "$@"
