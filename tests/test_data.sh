#!/usr/bin/env bash
# test_data.sh: the data files the stages and tests read are in the repository, each listed in
# its folder's README table (data/README.md, tests/data/README.md) with its origin, licence,
# size and SHA-256, and each file's size and digest equal the table's; every licence file a
# table names exists; nothing in the Makefile, scripts, stages, jobs or tests names a folder
# outside the repository. Ends with "test_data: N passed, N failed".
set -u
# shellcheck source=tests/testlib.sh
source "$(dirname "$0")/testlib.sh"

# rows of a README table: `path` | ... | size | `sha256` |  ->  "path size sha"
rows() {
  sed -nE 's/^\| `([^`]+)` \|.*\| ([0-9]+) \| `([0-9a-f]{64})` \|$/\1 \2 \3/p' "$1"
}

for dir in data tests/data; do
  readme=$dir/README.md
  check "$readme exists" test -f "$readme"
  n=0
  while read -r path size sha; do
    n=$((n + 1))
    f=$dir/$path
    if [ ! -f "$f" ]; then bad "$f (listed in $readme) is missing"; continue; fi
    got_size=$(stat -c %s "$f")
    got_sha=$(sha256sum "$f" | cut -d' ' -f1)
    if [ "$got_size" = "$size" ] && [ "$got_sha" = "$sha" ]; then ok
    else bad "$f: size $got_size, sha256 $got_sha; $readme says $size, $sha"; fi
  done < <(rows "$readme")
  [ "$n" -ge 3 ] && ok || bad "$readme: only $n rows read from its tables"
  # every data file (not the READMEs and licence texts) has a row
  listed=$(rows "$readme" | cut -d' ' -f1 | sort)
  while read -r f; do
    rel=${f#"$dir"/}
    grep -qxF "$rel" <<<"$listed" && ok || bad "$f has no row in $readme"
  done < <(find "$dir" -type f ! -name README.md ! -path "*/licenses/*" | sort)
  # every licence text the table points to is there
  while read -r lic; do
    [ -f "$lic" ] && ok || bad "$readme names $lic, which is missing"
  done < <(grep -oE '`(tests/)?data/licenses/[^`]+`' "$readme" | tr -d '`' | sort -u)
done

# no file of the project reaches outside the repository
hits=$(grep -rnE '\.\./shared|\$\(CURDIR\)/\.\.|SHARED' Makefile scripts stages jobs slurm pipeline \
         tests --include='*' 2>/dev/null | grep -v '^tests/test_data.sh:' || true)
[ -z "$hits" ] && ok || bad "files that name a folder outside the repository: $hits"

echo "test_data: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
