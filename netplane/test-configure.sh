#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Bad input to configure: each case must stop with a clear message and
# leave nothing that breaks the next run.  Prints TAP.

set -u
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0

check() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        fail=1
    fi
}

# A copy of the repository at HEAD, building into its own folder.
git clone -q "$root" "$tmp/repo"
cd "$tmp/repo" || exit 1
export NETPLANE_BUILD=$tmp/build

out=$(./configure --qemu-tarball=/nonexistent/qemu.tar.xz 2>&1)
rc=$?
[ $rc != 0 ] && grep -q "no such file" <<<"$out" && [ ! -e "$tmp/build/src" ]
check $? "missing tarball: $(tail -n 1 <<<"$out")"

head -c 1000 /dev/urandom > "$tmp/bogus.tar.xz"
out=$(./configure --qemu-tarball="$tmp/bogus.tar.xz" 2>&1)
rc=$?
[ $rc != 0 ] && grep -q "sha256 does not match" <<<"$out" && [ ! -e "$tmp/build/src" ]
check $? "wrong checksum: $(head -n 1 <<<"$out")"

out=$(./configure --qemu-tarball=/a --qemu-src=/b 2>&1)
rc=$?
[ $rc != 0 ] && grep -q "mutually exclusive" <<<"$out"
check $? "conflicting options: $out"

# A patch that does not apply.
cat > patches/zz-broken.patch <<'EOP'
From: netplane <netplane@localhost>
Subject: [PATCH] broken: a hunk whose context is not in QEMU

---
diff --git a/VERSION b/VERSION
--- a/VERSION
+++ b/VERSION
@@ -1 +1 @@
-9.9.9
+9.9.10
EOP
echo zz-broken.patch >> patches/series
out=$(./configure 2>&1)
rc=$?
[ $rc != 0 ] && grep -q "zz-broken.patch does not apply" <<<"$out" &&
    grep -q "nothing was configured" <<<"$out" && [ ! -e "$tmp/build/qemu" ]
check $? "patch that does not apply: $(grep error <<<"$out" | head -n 1)"

[ -z "$(git -C "$tmp/build/src" status --porcelain --untracked-files=no)" ] &&
    [ "$(git -C "$tmp/build/src" rev-parse HEAD)" = \
      "$(git -C "$tmp/build/src" rev-parse netplane-base)" ]
check $? "the tree was reset to upstream, clean"

# The next run, with the series fixed, goes through.
sed -i '/zz-broken.patch/d' patches/series
rm patches/zz-broken.patch
out=$(netplane/tree.sh sync "$tmp/build/src" 2>&1)
rc=$?
want=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' patches/series | wc -l)
have=$(git -C "$tmp/build/src" rev-list --count netplane-base..HEAD)
[ $rc = 0 ] && [ "$want" = "$have" ]
check $? "the next run applies the fixed series ($have of $want patches)"

echo "1..$n"
exit $fail
