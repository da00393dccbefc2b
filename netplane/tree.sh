#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The unpacked QEMU tree that netplane builds, kept as a git repository:
#
#   tag "upstream"       the pristine release
#   tag "netplane-base"  plus netplane/ds-tarball.patch for Debian's +ds
#                        tarball (nothing for upstream's own tarball)
#   HEAD                 one commit per entry of patches/series
#
# netplane's new files are symlinked into the tree (and ignored by its git),
# so editing them in the repository is all a rebuild needs.
#
#   tree.sh prepare SRC ORIGIN   create or update SRC (configure does this)
#   tree.sh pristine DST SRC     the release SRC was made from, unpatched
#   tree.sh sync SRC             re-apply patches/ and links if they changed
#   tree.sh refresh SRC          write SRC's commits back to patches/
#   tree.sh export SRC OUT       the git format-patch series, new files
#                                included, checkpatch'ed (make series)
#   tree.sh files                list netplane's new files

set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
series=$root/patches/series

die() {
    echo "tree.sh: error: $*" >&2
    exit 1
}

# Files of the repository that are netplane's tooling, not QEMU files.
is_project_file() {
    case "$1" in
    README.md|CONTRIBUTING.md|configure|Makefile|.gitignore|.ci/*|patches/*|netplane/*)
        return 0 ;;
    esac
    return 1
}

overlay_files() {
    local f
    git -C "$root" ls-files --cached --others --exclude-standard |
        while read -r f; do
            if ! is_project_file "$f" && [ -e "$root/$f" ]; then
                echo "$f"
            fi
        done | sort -u
}

# series_entries: "PATCH FILE..." lines of patches/series, comments removed.
series_entries() {
    [ -f "$series" ] || return 0
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$series"
}

patches_hash() {
    {
        series_entries | awk '{ print $1 }'
        series_entries | while read -r p _; do
            cat "$root/patches/$p"
        done
    } | sha256sum | cut -d' ' -f1
}

git_src() {
    git -C "$src" -c user.name=netplane -c user.email=netplane@localhost \
        -c commit.gpgsign=false "$@"
}

state_get() {
    sed -n "s/^$1=//p" "$src/.git/netplane-state" 2>/dev/null || true
}

state_set() {
    local f=$src/.git/netplane-state
    touch "$f"
    sed -i "/^$1=/d" "$f"
    echo "$1=$2" >> "$f"
}

# unpack ORIGIN into a new tree at $src, atomically.
unpack() {
    local origin=$1 tmp=$src.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"
    case "$origin" in
    tarball:*)
        echo "tree.sh: unpacking ${origin#tarball:}"
        tar -C "$tmp" --strip-components=1 -xf "${origin#tarball:}" ||
            { rm -rf "$tmp"; die "cannot unpack ${origin#tarball:}"; }
        ;;
    dir:*)
        echo "tree.sh: copying ${origin#dir:}"
        (cd "${origin#dir:}" && tar --exclude=./.git --exclude=./build -cf - .) |
            tar -C "$tmp" -xf - || { rm -rf "$tmp"; die "cannot copy ${origin#dir:}"; }
        ;;
    esac
    (
        src=$tmp
        git_src init -q
        git_src add -A -f .
        git_src commit -q -m "QEMU $(cat "$tmp/VERSION")"
        git_src tag upstream
        if [ ! -e "$tmp/pc-bios/edk2-x86_64-code.fd.bz2" ]; then
            git_src am -q "$root/netplane/ds-tarball.patch"
        fi
        git_src tag netplane-base
        state_set origin "$origin"
    ) || { rm -rf "$tmp"; die "cannot create the git repository in $tmp"; }
    rm -rf "$src"
    mv "$tmp" "$src"
}

# apply_patches: reset to netplane-base and apply patches/series.
apply_patches() {
    local want head p
    want=$(patches_hash)
    head=$(git_src rev-parse HEAD)
    if [ "$(state_get patches)" = "$want" ] && [ "$(state_get head)" = "$head" ]; then
        return 0
    fi
    if [ -n "$(state_get head)" ] && [ "$(state_get head)" != "$head" ]; then
        die "$src has commits that are not in patches/: run 'make patches' to keep them, or reset that tree with 'git -C $src reset --hard $(state_get head)'"
    fi
    if [ -n "$(git_src status --porcelain --untracked-files=no)" ]; then
        die "$src has uncommitted changes: commit them and run 'make patches', or discard them"
    fi
    state_set patches ""
    git_src reset -q --hard netplane-base
    while read -r p _; do
        [ -f "$root/patches/$p" ] || die "patches/series names $p, which does not exist"
        if [ -z "$(sed -n '/^diff --git /p' "$root/patches/$p")" ]; then
            continue
        fi
        if ! git_src am -q --keep-non-patch "$root/patches/$p"; then
            git_src am --abort 2>/dev/null || true
            git_src reset -q --hard netplane-base
            die "patches/$p does not apply to QEMU $(cat "$src/VERSION"); the tree was reset to upstream"
        fi
    done < <(series_entries)
    state_set head "$(git_src rev-parse HEAD)"
    state_set patches "$want"
}

# link_overlay: symlink netplane's new files into the tree.
link_overlay() {
    local f list=$src/.git/netplane-files
    local new
    new=$(overlay_files)
    if [ -f "$list" ]; then
        while read -r f; do
            if [ -L "$src/$f" ] && ! grep -qxF "$f" <<<"$new"; then
                rm -f "$src/$f"
            fi
        done < "$list"
    fi
    while read -r f; do
        [ -n "$f" ] || continue
        if [ -e "$src/$f" ] && [ ! -L "$src/$f" ]; then
            die "$f exists in QEMU already: change upstream files through patches/, not by overriding them"
        fi
        mkdir -p "$(dirname "$src/$f")"
        ln -sfn "$root/$f" "$src/$f"
    done <<<"$new"
    printf '%s\n' "$new" > "$list"
    { echo "# netplane's new files, symlinked from $root"; cat "$list"; } \
        > "$src/.git/info/exclude"
}

cmd_prepare() {
    src=$1
    if [ ! -d "$src/.git" ] || [ "$(state_get origin)" != "$2" ]; then
        unpack "$2"
    fi
    apply_patches
    link_overlay
}

# cmd_pristine DST FROM: the release FROM was made from, without netplane.
cmd_pristine() {
    local origin
    src=$2
    origin=$(state_get origin)
    [ -n "$origin" ] || die "$2 is not prepared: run ./configure"
    src=$1
    if [ ! -d "$src/.git" ] || [ "$(state_get origin)" != "$origin" ]; then
        mkdir -p "$(dirname "$src")"
        unpack "$origin"
    fi
}

cmd_sync() {
    src=$1
    [ -d "$src/.git" ] || die "$src is not prepared: run ./configure"
    apply_patches
    link_overlay
}

# cmd_refresh: export netplane-base..HEAD of the tree as patches/*.patch,
# keeping the new-file lists of patches/series by patch name.
cmd_refresh() {
    src=$1
    local tmp p name files old
    tmp=$(mktemp -d)
    git_src format-patch -q --no-signature --zero-commit --no-numbered \
        --filename-max-length=120 \
        -o "$tmp" netplane-base..HEAD
    old=$(series_entries)
    {
        sed -n '/^#/p' "$series" 2>/dev/null || true
        for p in "$tmp"/*.patch; do
            [ -e "$p" ] || continue
            name=$(basename "$p" | sed 's/^[0-9]*-//')
            mv "$p" "$tmp/$name"
            files=$(awk -v n="$name" '$1 == n { $1 = ""; print substr($0, 2) }' <<<"$old")
            echo "$name${files:+ $files}"
        done
        # Entries without a diff (new files only) keep their place at the end.
        while read -r p files; do
            [ -n "$p" ] || continue
            if [ -z "$(sed -n '/^diff --git /p' "$root/patches/$p")" ]; then
                echo "$p${files:+ $files}"
            fi
        done <<<"$old"
    } > "$tmp/series"
    while read -r p _; do
        if [ -n "$p" ] && [ -n "$(sed -n '/^diff --git /p' "$root/patches/$p" 2>/dev/null)" ]; then
            rm -f "$root/patches/$p"
        fi
    done <<<"$old"
    mkdir -p "$root/patches"
    for p in "$tmp"/*.patch; do
        [ -e "$p" ] && mv "$p" "$root/patches/"
    done
    mv "$tmp/series" "$series"
    rm -rf "$tmp"
    state_set head "$(git_src rev-parse HEAD)"
    state_set patches "$(patches_hash)"
    echo "tree.sh: patches/ now holds $(series_entries | wc -l) entries; review with 'git diff patches/'"
}

# commit_header_only PATCH: an empty commit with PATCH's author and message
# (an entry of patches/series that only adds new files).
commit_header_only() {
    local tmp
    tmp=$(mktemp -d)
    git mailinfo "$tmp/msg" "$tmp/patch" < "$1" > "$tmp/info"
    { sed -n 's/^Subject: //p' "$tmp/info"; echo; cat "$tmp/msg"; } > "$tmp/commit"
    GIT_AUTHOR_NAME=$(sed -n 's/^Author: //p' "$tmp/info") \
    GIT_AUTHOR_EMAIL=$(sed -n 's/^Email: //p' "$tmp/info") \
    GIT_AUTHOR_DATE=$(sed -n 's/^Date: //p' "$tmp/info") \
        git -c user.name=netplane -c user.email=netplane@localhost \
        commit -q --allow-empty -F "$tmp/commit"
    rm -rf "$tmp"
}

# cmd_export SRC OUT [BUILD_EACH]: a git format-patch series where every
# entry of patches/series carries its hook and its new files, with a cover
# letter, checked by upstream's checkpatch.pl.
cmd_export() {
    src=$1
    local out=$2 build_each=${3:-} wt p files f n errors=0
    [ -d "$src/.git" ] || die "$src is not prepared: run ./configure"
    # series-work/src and series-work/qemu: the same relative layout as
    # src and qemu, so that ccache serves the prefix builds.
    wt=$(dirname "$src")/series-work/src
    git_src worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
    git_src worktree prune
    git_src worktree add -q --detach "$wt" netplane-base

    # Every new file belongs to exactly one entry.
    local assigned
    assigned=$(series_entries | awk '{ for (i = 2; i <= NF; i++) print $i }' | sort)
    if [ -n "$(uniq -d <<<"$assigned")" ]; then
        die "patches/series lists these files twice: $(uniq -d <<<"$assigned" | tr '\n' ' ')"
    fi
    local missing
    missing=$(comm -23 <(overlay_files) <(sort -u <<<"$assigned"))
    [ -z "$missing" ] || die "new files not in any entry of patches/series: $(tr '\n' ' ' <<<"$missing")"

    while read -r p files; do
        (
            cd "$wt"
            if [ -n "$(sed -n '/^diff --git /p' "$root/patches/$p")" ]; then
                git -c user.name=netplane -c user.email=netplane@localhost \
                    am -q --keep-non-patch "$root/patches/$p" ||
                    die "patches/$p does not apply"
            else
                commit_header_only "$root/patches/$p"
            fi
            for f in $files; do
                [ -f "$root/$f" ] || die "patches/series: $p lists $f, which does not exist"
                mkdir -p "$(dirname "$f")"
                cp "$root/$f" "$f"
                git add -f "$f"
            done
            git -c user.name=netplane -c user.email=netplane@localhost \
                commit -q --amend --no-edit --allow-empty
        )
    done < <(series_entries)

    rm -rf "$out"
    mkdir -p "$out"
    n=$(git -C "$wt" rev-list --count netplane-base..HEAD)
    [ "$n" -gt 0 ] || die "patches/series is empty"
    git -C "$wt" format-patch -q --cover-letter --no-signature --thread \
        --subject-prefix="PATCH netplane" -o "$out" netplane-base..HEAD
    python3 - "$out"/0000-cover-letter.patch "$root/patches/cover-letter" <<'EOF'
import sys
cover, text = sys.argv[1], open(sys.argv[2]).read().split('\n', 1)
s = open(cover).read()
s = s.replace('*** SUBJECT HERE ***', text[0].strip())
s = s.replace('*** BLURB HERE ***', text[1].strip() if len(text) > 1 else '')
open(cover, 'w').write(s)
EOF

    for p in "$out"/*.patch; do
        case "$p" in *0000-cover-letter.patch) continue ;; esac
        if ! (cd "$wt" && perl scripts/checkpatch.pl --no-signoff -q "$p"); then
            errors=$((errors + 1))
        fi
    done
    echo "tree.sh: $n patches + cover letter in $out"
    [ "$errors" = 0 ] || die "checkpatch.pl found errors in $errors patch(es)"

    if [ -n "$build_each" ]; then
        local bdir sha
        bdir=$(dirname "$src")/series-work/qemu
        for sha in $(git -C "$wt" rev-list --reverse netplane-base..HEAD); do
            git -C "$wt" checkout -q "$sha"
            echo "tree.sh: building $(git -C "$wt" log -1 --format=%s "$sha")"
            if [ ! -f "$bdir/build.ninja" ]; then
                rm -rf "$bdir"
                mkdir -p "$bdir"
                (cd "$bdir" && eval "\"$wt/configure\" --python=/usr/bin/python3 $build_each") ||
                    die "configure failed at $sha"
            fi
            ninja -C "$bdir" qemu-system-x86_64 tests/qtest/qos-test \
                >/dev/null ||
                die "the series does not build at $(git -C "$wt" log -1 --format=%s "$sha")"
        done
        echo "tree.sh: every prefix of the series builds"
    fi
}

case "${1:-}" in
prepare) cmd_prepare "$2" "$3" ;;
pristine) cmd_pristine "$2" "$3" ;;
sync) cmd_sync "$2" ;;
refresh) cmd_refresh "$2" ;;
export) cmd_export "$2" "$3" "${4:-}" ;;
files) overlay_files ;;
*) die "usage: tree.sh prepare SRC ORIGIN | sync SRC | refresh SRC | export SRC OUT [ARGS] | files" ;;
esac
